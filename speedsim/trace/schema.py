"""The exit-trace schema: one JSON record per decoded sequence (JSON Lines, gzip allowed).

An exit trace is what the pipeline controller needs to rebuild SPEED's schedule without the
model: for each generated position `t` the `R` token ids predicted at the `R` exits
(`exits[t][r]`; the last exit's id is the emitted token). It does not depend on the model's
width, so one trace drives simulations of models of any dimensions with the same `R`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from speedsim.limits import MAX_TOKEN_ID

TRACE_VERSION = 1

TokenId = Annotated[StrictInt, Field(ge=0, le=MAX_TOKEN_ID)]


class ExitTrace(BaseModel):
    """Exit predictions of one sequence decoded by a UxR shared model."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    version: StrictInt = Field(TRACE_VERSION, description="schema version (required in a file: see speedsim.trace.io)")
    seq_id: str = Field(min_length=1, description="identifier of the source example")
    src_len: StrictInt = Field(ge=0, le=MAX_TOKEN_ID, description="source (encoder input or prompt) length in tokens")
    repeats: StrictInt = Field(ge=1, le=1024, description="R: number of exits, one per repeat of the shared group")
    exits: list[list[TokenId]] = Field(description="exits[t][r]: token id predicted at exit r for position t")
    eos_id: TokenId | None = Field(None, description="end-of-sequence id, if decoding stopped on it")
    model: str | None = Field(None, description="name of the model that produced the trace (UxR, task)")

    @model_validator(mode="after")
    def _check_shape(self) -> ExitTrace:
        if self.version != TRACE_VERSION:
            raise ValueError(f"unsupported trace version {self.version} (this build reads {TRACE_VERSION})")
        for t, row in enumerate(self.exits):
            if len(row) != self.repeats:
                raise ValueError(f"exits[{t}] has {len(row)} predictions, expected repeats={self.repeats}")
        return self

    @property
    def tokens(self) -> list[int]:
        """The emitted (final-exit) tokens."""
        return [row[-1] for row in self.exits]
