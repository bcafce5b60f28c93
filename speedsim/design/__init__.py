"""Design-space questions about a chip: what bounds a decode's time (`sensitivity`), and the chip that
meets a target (`design`: the least change of one parameter; `serve_design`: the highest load)."""

from speedsim.design.search import (
    DesignResult,
    ServeDesignResult,
    design,
    field_range,
    serve_design,
)
from speedsim.design.sensitivity import (
    STEP,
    Difference,
    SensitivityResult,
    default_parameters,
    sensitivity,
    with_settings,
)

__all__ = ["DesignResult", "ServeDesignResult", "design", "field_range", "serve_design", "STEP", "Difference", "SensitivityResult", "default_parameters", "sensitivity", "with_settings"]
