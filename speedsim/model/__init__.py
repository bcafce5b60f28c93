"""The functional SPEED model: a parameter-shared (CYCLE) decoder with an exit per repeat."""

from speedsim.model.loss import default_exit_weights, exit_loss
from speedsim.model.model import SharedDecoder, SpeedConfig

__all__ = ["SharedDecoder", "SpeedConfig", "default_exit_weights", "exit_loss"]
