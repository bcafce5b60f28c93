"""`Sharing`: the one representation of UxR parameter sharing (U distinct layers applied R times)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from speedsim.errors import UserError
from speedsim.limits import MAX_DEPTH, MAX_REPEATS

_UXR = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", re.ASCII)  # ASCII digits ('٤x٣' is no sharing)


@dataclass(frozen=True, order=True)
class Sharing:
    """UxR parameter sharing: U distinct layers applied R times (depth U*R)."""

    unique: int   # U: distinct layers in the shared group
    repeats: int  # R: times the group is applied; also the number of exits

    def __post_init__(self) -> None:
        for name in ("unique", "repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{name} must be an integer >= 1, got {v!r}", where="sharing")
        if self.repeats > MAX_REPEATS or self.unique * self.repeats > MAX_DEPTH:
            raise UserError(f"{self.unique}x{self.repeats} is out of range (R <= {MAX_REPEATS}, "
                            f"depth U*R <= {MAX_DEPTH} layers)", where="sharing")

    @classmethod
    def parse(cls, text: str, where: str = "--sharing") -> Sharing:
        """`"4x3"` -> Sharing(4, 3); a `UserError` at `where` for anything else."""
        m = _UXR.fullmatch(str(text))
        if not m:
            raise UserError(f"'{text}' is not of the form UxR (e.g. 4x3)", where=where)
        u, r = int(m.group(1)), int(m.group(2))
        if u < 1 or r < 1:
            raise UserError(f"'{text}': U and R must be >= 1", where=where)
        if r > MAX_REPEATS or u * r > MAX_DEPTH:
            raise UserError(f"'{text}' is out of range (R <= {MAX_REPEATS}, depth U*R <= {MAX_DEPTH} layers)",
                            where=where)
        return cls(u, r)

    @property
    def depth(self) -> int:
        """Decoder depth: layers a token passes through, U*R."""
        return self.unique * self.repeats

    def __str__(self) -> str:
        return f"{self.unique}x{self.repeats}"
