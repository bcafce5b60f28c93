"""The engine: kernel cost, on-chip residency and the host (the core), driven by a recurrence for
one stream or by SimPy where work overlaps."""

from speedsim.engine.core import CAUSE_LABELS, CAUSES, ClassTotals, DeviceModel, EngineRun, ProgramTotals
from speedsim.engine.cost import CostModel, KernelPlan, check_profile, open_profile
from speedsim.engine.des import CountingEnvironment, Session
from speedsim.engine.drivers import Engine, time_call
from speedsim.engine.host import MODES, HostTiming, Mode
from speedsim.engine.memory import OnChipState
from speedsim.engine.recorder import Recorder

__all__ = ["CAUSES", "CAUSE_LABELS", "MODES", "ClassTotals", "CostModel", "CountingEnvironment", "DeviceModel", "Engine",
           "EngineRun", "HostTiming", "KernelPlan", "Mode", "OnChipState", "ProgramTotals", "Recorder", "Session",
           "check_profile", "open_profile", "time_call"]
