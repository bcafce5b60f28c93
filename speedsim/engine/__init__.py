"""The SimPy discrete-event engine: host issue, compute units, memory hierarchy."""

from speedsim.engine.cost import CostModel
from speedsim.engine.memory import OnChipState
from speedsim.engine.recorder import Recorder
from speedsim.engine.sim import Engine, SimResult, time_call

__all__ = ["CostModel", "Engine", "OnChipState", "Recorder", "SimResult", "time_call"]
