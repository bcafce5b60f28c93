"""Validation of simulated against measured times, and calibration of a profile's free parameters."""

from speedsim.validation.measured import MeasuredRow, read_measured
from speedsim.validation.validate import ValidationReport, validate

__all__ = ["MeasuredRow", "ValidationReport", "read_measured", "validate"]
