"""SPEED's pipeline control: one controller, driven live by a model or replayed from an exit trace."""

from speedsim.pipeline.controller import PipelineController, Policy, Step, replay, run_controller
from speedsim.pipeline.stats import ScheduleStats, schedule_stats

__all__ = ["PipelineController", "Policy", "ScheduleStats", "Step", "replay", "run_controller", "schedule_stats"]
