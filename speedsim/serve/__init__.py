"""Many requests on one device: a serving simulation of SPEED and its baselines (torch-free)."""

from speedsim.serve.metrics import Percentiles, RequestRecord, ServeResult, Utilization
from speedsim.serve.run import serve

__all__ = ["Percentiles", "RequestRecord", "ServeResult", "Utilization", "serve"]
