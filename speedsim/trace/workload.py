"""A synthetic workload, typed: what `--synthetic TEXT` and a sweep run's synthetic keys say.

`SyntheticWorkload` holds the accuracy (`mispredict=P`, `perfect` being P = 0; `agree=A0/A1/...`;
or `fit=TRACE`, a real trace's settle-exit distribution, flip patterns, burstiness, lengths and
stops on <eos>), the lengths, the number of sequences, the burstiness and the seed. The command
line reads its text once (`SyntheticWorkload.from_text`); a sweep builds it from its run's fields;
neither goes through text again. `spec(R)` checks it and gives the generator's `SyntheticSpec`.

Defaults (`speedsim.defaults`): `OUT_LEN` output tokens and `SRC_LEN` source tokens per
sequence, `SEQS` sequences; with `fit`, by default one sequence per real one, of its lengths.
`mispredict=P` settles every miss at the first verifying exit, so it is the optimistic bound for
a miss rate P.

The fitted trace's path is checked where it is read (`speedsim.trace.io`): `spec(..., fit_where=)`
names its source (`FIT_WHERE` on the command line); without it the path names itself (a sweep's
check names the spec's key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

from speedsim import defaults, limits
from speedsim.errors import UserError, user_error
from speedsim.trace.io import read_traces, resolve_trace
from speedsim.trace.schema import ExitTrace
from speedsim.trace.synthetic import SyntheticSpec, fit, generate

WHERE = "--synthetic"
FIT_WHERE = "--synthetic fit="  # where a `fit=TRACE` path came from on the command line
_KEYS = ("perfect", "mispredict", "agree", "fit", "len", "seqs", "src", "burst", "seed")
_ACCURACY = ("perfect", "mispredict", "agree", "fit")
# the range of each numeric item (its text key, the field it sets)
_RANGES: dict[str, tuple[str, type, float, float]] = {
    "seqs": ("seqs", int, 1, limits.MAX_SYNTHETIC_SEQS),
    "seed": ("seed", int, 0, 2**63 - 1),
    "len": ("out_len", int, 1, limits.MAX_SYNTHETIC_LEN),
    "src": ("src_len", int, 1, limits.MAX_SYNTHETIC_LEN),
    "burst": ("burst", float, 0.0, 1.0),
    "mispredict": ("mispredict", float, 0.0, 1.0),
}


@dataclass(frozen=True)
class SyntheticWorkload:
    """Seeded synthetic exit traces. One of `mispredict`, `agree` and `fit` gives the accuracy."""

    mispredict: float | None = None          # first-exit misprediction rate (None with agree or fit)
    agree: str | None = None                 # 'A0/A1/...': P(exit r agrees with the final exit), r = 0..R-1 (the last may be left out)
    fit: str | None = None                   # a real trace (shipped name or path) to fit
    burst: float | None = None               # P(first exit misses | it missed at the previous position)
    out_len: int | None = None               # output tokens (None: OUT_LEN, or the fitted trace's own lengths)
    src_len: int | None = None               # source tokens (None: SRC_LEN, or the fitted trace's own)
    seqs: int | None = None                  # sequences (None: SEQS, or one per sequence of the fitted trace)
    seed: int = defaults.SEED

    def __post_init__(self) -> None:
        given = [k for k in ("mispredict", "agree", "fit") if getattr(self, k) is not None]
        if len(given) != 1:
            raise UserError(f"give one of mispredict, agree and fit (got {', '.join(given) or 'none'})", where=WHERE)
        for key, (name, _, lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not lo <= value <= hi:  # also rejects nan
                raise UserError(f"{key}={value} is outside [{lo:g}, {hi:g}]", where=WHERE)
        self.agreement()  # parses

    @classmethod
    def from_text(cls, text: str) -> SyntheticWorkload:
        """The `--synthetic` text (`perfect`, `mispredict=P`, `agree=A0/A1/...` or `fit=TRACE`, plus
        `len=N`, `seqs=K`, `src=N`, `burst=B`, `seed=S`); a `UserError` naming the item on anything off."""
        if not text or not text.strip():
            raise UserError("empty spec (give perfect, mispredict=P, agree=A0/A1/... or fit=TRACE)", where=WHERE)
        items = _items(text)
        values: dict = {name: _number(items, key, kind) for key, (name, kind, _, _) in _RANGES.items()}
        values["seed"] = defaults.SEED if values["seed"] is None else values["seed"]
        if "agree" in items:
            values["agree"] = items["agree"]
        elif "fit" in items:
            values["fit"] = items["fit"]
        elif values["mispredict"] is None:  # perfect
            values["mispredict"] = 0.0
        return cls(**values)

    @property
    def text(self) -> str:
        """The workload as `--synthetic` text (how results and trace names show it): the accuracy,
        then len, seqs, src and seed (fit: seed before src), then burst, each where set."""
        if self.fit is not None:
            accuracy, order = f"fit={self.fit}", ("len", "seqs", "seed", "src", "burst")
        elif self.agree is not None:
            accuracy, order = f"agree={self.agree}", ("len", "seqs", "src", "seed", "burst")
        else:
            accuracy, order = f"mispredict={self.mispredict:g}", ("len", "seqs", "src", "seed", "burst")
        values = {"len": self.out_len, "seqs": self.seqs, "src": self.src_len, "seed": self.seed, "burst": self.burst}
        return ",".join([accuracy] + [f"{k}={values[k]:g}" if isinstance(values[k], float) else f"{k}={values[k]}"
                                      for k in order if values[k] is not None])

    def agreement(self) -> list[float] | None:
        """`agree` as numbers (None without it)."""
        if self.agree is None:
            return None
        try:
            return [float(v) for v in self.agree.split("/")]
        except ValueError:
            raise UserError(f"agree={self.agree} is not a list of numbers A0/A1/...", where=WHERE) from None

    def spec(self, repeats: int, fit_where: str | None = None) -> tuple[SyntheticSpec, int]:
        """The generator's spec for a model with `repeats` exits, and the number of sequences. `fit_where`:
        where the `fit` path came from (`FIT_WHERE`; None: the path names itself)."""
        seqs = self.seqs
        if self.fit is not None:
            try:
                base = fit(read_traces(resolve_trace(self.fit, where=fit_where), fit_where))
            except ValidationError as err:  # (a ValueError too: its text is many lines)
                msg = err.errors()[0]["msg"].removeprefix("Value error, ")
                raise UserError(f"fit={self.fit}: the fitted parameters are invalid: {msg}", where=WHERE) from None
            except ValueError as err:  # no traces, or traces of several R
                raise UserError(f"fit={self.fit}: {err}", where=WHERE) from None
            if base.repeats != repeats:
                raise UserError(f"fit={self.fit} has R={base.repeats} exits, expected {repeats}", where=WHERE)
            update: dict = {"lengths": [self.out_len]} if self.out_len else {}
            update |= {"src_lens": [self.src_len]} if self.src_len else {}
            update |= {"burst": self.burst} if self.burst is not None else {}
            raw = {**base.model_dump(), **update}
            seqs = seqs or len(base.lengths)  # by default one fitted sequence per real one, of its lengths
        else:
            agreement = self.agreement() or [1.0 - (self.mispredict or 0.0)] + [1.0] * (repeats - 1)
            raw = {"repeats": repeats, "agreement": agreement, "burst": self.burst,
                   "lengths": [self.out_len or defaults.OUT_LEN], "src_lens": [self.src_len or defaults.SRC_LEN]}
            seqs = seqs or defaults.SEQS
        try:
            spec = SyntheticSpec.model_validate(raw)
        except ValidationError as err:
            if self.fit is not None:  # what the fitted trace says contradicts what is added (burst)
                msg = err.errors()[0]["msg"].removeprefix("Value error, ")
                raise UserError(f"fit={self.fit}: {msg}", where=WHERE) from None
            raise user_error(err, WHERE, with_field=False) from None
        tokens = _lengths_drawn(spec, seqs)
        if seqs * max(tokens) > limits.MAX_SYNTHETIC_TOKENS:
            raise UserError(f"{seqs} sequences of up to {max(tokens)} tokens exceed {limits.MAX_SYNTHETIC_TOKENS:,} "
                            "tokens in all (MAX_SYNTHETIC_TOKENS: about half an hour of simulation)", where=WHERE)
        return spec, seqs

    def decodable_spec(self, repeats: int, fit_where: str | None = None) -> tuple[SyntheticSpec, int]:
        """`spec` for a decode (simulate, sweeps): a `UserError` if every sequence would have one token,
        so that nothing is decoded after the prefill (serving takes such prefill-only requests)."""
        spec, seqs = self.spec(repeats, fit_where)
        if max(_lengths_drawn(spec, seqs)) <= 1:
            what = f"fit={self.fit}'s sequences are empty or of one token" if self.fit is not None and not self.out_len \
                else "len=1"
            raise UserError(f"every sequence has one token ({what}): nothing is decoded after the prefill", where=WHERE)
        return spec, seqs

    def traces(self, repeats: int, fit_where: str | None = None) -> list[ExitTrace]:
        """The decode's traces, for a model with `repeats` exits (`fit_where`: as for `spec`)."""
        spec, seqs = self.decodable_spec(repeats, fit_where)
        return generate(spec, seqs, seed=self.seed, name=f"synthetic:{self.text}")


def _items(text: str) -> dict[str, str]:
    items: dict[str, str] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise UserError(f"empty item in '{text}'", where=WHERE)
        m = re.fullmatch(r"([a-z_]+)=(.+)", item)
        key, value = (item, "") if item == "perfect" else (m.group(1), m.group(2)) if m else (None, "")
        if key is None:
            raise UserError(f"'{item}' is not perfect or KEY=VALUE", where=WHERE)
        if key not in _KEYS or key == "perfect" and value:
            raise UserError(f"unknown key '{key}' (known: {', '.join(_KEYS)})", where=WHERE)
        if key in items:
            raise UserError(f"'{key}' is given twice", where=WHERE)
        items[key] = value
    chosen = [k for k in _ACCURACY if k in items]
    if len(chosen) > 1:
        raise UserError(f"give one of {', '.join(_ACCURACY)}, not {' and '.join(chosen)}", where=WHERE)
    if not chosen:  # an accuracy silently defaulted to `perfect` would hide a typo or a missing item
        raise UserError(f"'{text}' gives no accuracy: add one of perfect, mispredict=P, agree=A0/A1/... or "
                        "fit=TRACE", where=WHERE)
    return items


def _number(items: dict[str, str], key: str, kind: type) -> int | float | None:
    """Item `key` as a number (its range is `SyntheticWorkload`'s to check)."""
    if key not in items:
        return None
    value = limits.parse_number(items[key], key, WHERE, integer=kind is int)  # ASCII digits only
    return int(value) if kind is int else value


def _lengths_drawn(spec: SyntheticSpec, seqs: int) -> list[int]:
    """The output lengths `generate(spec, seqs)` can give its sequences."""
    return spec.lengths[:seqs] if spec.in_order else spec.lengths


def parse_synthetic(text: str, repeats: int) -> tuple[SyntheticSpec, int, int]:
    """The `--synthetic` text as (spec, number of sequences, seed); a `UserError` on anything off."""
    workload = SyntheticWorkload.from_text(text)
    spec, seqs = workload.spec(repeats, FIT_WHERE)
    return spec, seqs, workload.seed


def synthetic_traces(text: str, repeats: int) -> list[ExitTrace]:
    """The traces the `--synthetic` text describes, for a model with `repeats` exits."""
    return SyntheticWorkload.from_text(text).traces(repeats, FIT_WHERE)
