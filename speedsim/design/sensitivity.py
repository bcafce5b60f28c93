"""What bounds a decode's time: the elasticity of each method's per-token time in each parameter of the chip.

For each method (SPEED and its baselines) and each parameter x of the profile (a dotted path of
`speedsim.hardware.whatif.parameter_paths`), the elasticity

    e = d ln T / d ln x        (T: the method's simulated decode time per token, `per_token_us`)

by a central difference in log space,

    e = (ln T(x (1 + h)) - ln T(x (1 - h))) / (ln (1 + h) - ln (1 - h)),

each perturbed profile made by `speedsim.hardware.whatif.with_overrides` (validated as a loaded
profile, and its cost-model rates, devices and memory checked as `simulate` checks them) and
simulated as `speedsim simulate` simulates it: the same programs (rebuilt where the parameter changes
the kernels' selection: `compute.units`, the software rules), the same cost formulas, the same
per-token time (in graph mode every variant at once through `speedsim.design.grid`, equal to the
engine's to ~1e-13; otherwise one engine run per variant). e = -1: the time is inversely
proportional to x (a rate that bounds all of it); +1: proportional (a latency that is all of it);
0: x does not matter to this decode.

**The two views.** `simulate` charges every microsecond to one cause (`speedsim.engine.core`:
host, launch, fixed latency, DRAM, on-chip, compute, waiting on another stream) by the same rule as
a derivative: a maximum charges the term that bounds it, the soft maximum of memory and compute
splits by each one's share. So scaling every rate of one cause by a factor scales that cause's
time and nothing else, and the elasticities of a cause's rates sum to minus its share of the time
(of its latencies: plus the share); a cause that carries no time has no elasticity. DRAM's rates
are its bandwidth (with its efficiency) and each unit's streaming rate, bytes in flight over the
load latency (Little's law): a decode whose kernels have few blocks streams DRAM at the units'
rate, so its DRAM time answers to `compute.unit_inflight_KiB` and `memory.dram.latency_ns` more
than to `memory.dram.bandwidth_GBps`.
`tests/test_sensitivity.py` checks both on the H200 and on constructed decodes.

**The step** h = 1% (`--step`). Small enough to be local: on the H200, for every parameter of the
two decodes of issue 23 (t5base 12x1 and dec7b 32x1, one sequence), the elasticities at 1% differ
from those at 0.5% by at most 1e-5, and from those at 2% by at most 4e-5; a much larger step can
straddle one of the model's kinks (a maximum changing its bounding term, a wave of blocks, a tensor
no longer fitting on-chip) and average the slopes on either side. Large enough to be
above rounding: a per-token time is a sum of float64 kernel times, exact to ~1e-15 relative, while
the numerator ln T(x(1+h)) - ln T(x(1-h)) of an elasticity of 0.001 is 2e-5, ten orders of
magnitude above it; a smaller step would resolve the model's discreteness, not a finer derivative.

**Which parameters.** By default every number of the profile except the software stack's rules
(`software.*`: tile sizes and framework-op counts, which choose kernels rather than describe the
chip; name them in `params` to include them), and except the interconnect's (`interconnect.*`) for a
decode on one device, where they carry no time; and never `interconnect.devices_per_node`, a bound on the
deployment (a node of fewer devices than it uses is refused), not a rate. A parameter whose value is 0 is skipped (no relative
step). An integer field (`compute.units`) is stepped to round(x (1 ± h)), at least x ± 1, and the
elasticity taken over the values used (said in the result). A value the profile cannot take (a
field's closed range, a check between fields, a cost-model rate out of range, a model that no
longer fits the device memory) drops that side: the difference is one-sided (forward or backward,
said in the result); with neither side the parameter is skipped and the reason said.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from speedsim.engine import CostModel, Mode
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.hardware.whatif import Override, apply_settings, overrides_dict, parameter_paths, with_overrides
from speedsim.simulate.core import decode_per_token_us, effective_mode, simulate
from speedsim.simulate.phases import Phase, build_phases
from speedsim.simulate.scenario import Scenario
from speedsim.workload import KernelRules

STEP = 0.01              # the relative step of the central differences (see the module docstring)
MIN_STEP, MAX_STEP = 1e-4, 0.2
SOFTWARE = "software."   # the software stack's rules: not in the default parameters
INTERCONNECT = "interconnect."  # the links between devices: not for a decode on one device
NODE_SIZE = "interconnect.devices_per_node"  # a count of devices that bounds the deployment, not a rate: never


@dataclass(frozen=True)
class Difference:
    """One parameter's elasticities, and how they were taken."""

    path: str
    value: float                    # the profile's own value
    low: float | None               # the value simulated below it (None: the profile cannot take it)
    high: float | None              # ... and above it
    kind: str                       # central | forward (above only) | backward (below only)
    note: str                       # why one-sided, or how an integer was stepped ("" otherwise)
    elasticity: Mapping[str, float]  # method -> d ln(per-token time) / d ln(parameter)

    @property
    def magnitude(self) -> float:
        """The largest |elasticity| over the methods (the ranking's key)."""
        return max(abs(v) for v in self.elasticity.values())


@dataclass(frozen=True)
class SensitivityResult:
    """Every method's elasticities in the chosen parameters of one profile, for one decode."""

    profile: str
    overrides: Mapping[str, float]                          # what --set changed before (path -> value)
    model: str
    sharing: str
    mode: str
    mode_label: str
    step: float
    methods: tuple[str, ...]                                # SPEED first, then each baseline
    per_token_us: Mapping[str, float]                       # method -> its per-token time at the profile
    time_by_cause_us_per_token: Mapping[str, Mapping[str, float]]  # method -> the engine's attribution
    parameters: tuple[Difference, ...]                      # the largest magnitude over the methods first
    skipped: Mapping[str, str]                              # path -> why it has no elasticity

    def ranked(self, method: str) -> list[tuple[str, float]]:
        """(path, elasticity) of `method`, the largest magnitude first."""
        return sorted(((d.path, d.elasticity[method]) for d in self.parameters), key=lambda pv: -abs(pv[1]))

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object: `elasticity` (method -> {path -> value}, ranked by magnitude) and
        `per_token_us` (method -> value), with the run's facts, the engine's time by cause, how each
        difference was taken and what was skipped."""
        head: dict[str, Any] = {"profile": self.profile}
        if self.overrides:
            head["overrides"] = dict(self.overrides)
        differences = {}
        for d in self.parameters:
            entry: dict[str, Any] = {"value": d.value, "kind": d.kind}
            if d.low is not None:
                entry["low"] = d.low
            if d.high is not None:
                entry["high"] = d.high
            if d.note:
                entry["note"] = d.note
            differences[d.path] = entry
        return {**head, "model": self.model, "sharing": self.sharing, "mode": self.mode,
                "mode_label": self.mode_label, "step": self.step,
                "per_token_us": dict(self.per_token_us),
                "elasticity": {m: dict(self.ranked(m)) for m in self.methods},
                "time_by_cause_us_per_token": {m: dict(v) for m, v in self.time_by_cause_us_per_token.items()},
                "differences": differences, "skipped": dict(self.skipped)}


def with_settings(scenario: Scenario, settings: Sequence[str], where: str = "--set"
                  ) -> tuple[Scenario, dict[str, float]]:
    """`scenario` on its profile with `settings` (`PATH=VALUE` texts) applied, the changed profile checked
    as a loaded one (its cost-model rates too), and the overrides made (path -> value)."""
    if not settings:
        return scenario, {}
    profile, overrides = apply_settings(scenario.profile, list(settings), where)
    CostModel.from_profile(profile, where=where)
    return replace(scenario, profile=profile), overrides_dict(overrides)


def default_parameters(profile: HardwareProfile, devices: int = 1) -> list[str]:
    """The parameters `sensitivity` varies by default: every number of the profile but `software.*`, and but
    `interconnect.*` for a decode on one device (`devices`: the run's)."""
    skip = (SOFTWARE,) if devices > 1 else (SOFTWARE, INTERCONNECT)
    return [p for p in parameter_paths(profile) if not p.startswith(skip) and p != NODE_SIZE]


def _chosen(profile: HardwareProfile, params: Sequence[str] | None, where: str, devices: int = 1) -> list[str]:
    known = parameter_paths(profile)
    if params is None:
        return default_parameters(profile, devices)
    chosen: list[str] = []
    for path in params:
        path = path.strip()
        if path not in known:
            close = difflib.get_close_matches(path, list(known), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (`speedsim profiles --params NAME` lists them)"
            raise UserError(f"'{path}' is not a numeric parameter of profile {profile.name}{hint}", where=where)
        if path not in chosen:
            chosen.append(path)
    if not chosen:
        raise UserError("no parameter given (PATH,PATH,...)", where=where)
    return chosen


def _is_integer(profile: HardwareProfile, path: str) -> bool:
    """Whether the field at `path` holds an integer (a relative step must land on integers)."""
    node: Any = profile.model_dump()
    for key in path.split("."):
        node = node[int(key)] if isinstance(node, list) else node[key]
    return isinstance(node, int) and not isinstance(node, bool)


def _sides(value: float, step: float, integer: bool) -> tuple[float, float, str]:
    """The values below and above `value` to simulate, and a note on how they were chosen."""
    if not integer:
        return value * (1.0 - step), value * (1.0 + step), ""
    low, high = float(round(value * (1.0 - step))), float(round(value * (1.0 + step)))
    low, high = min(low, value - 1.0), max(high, value + 1.0)
    return low, high, f"integer: stepped to {low:g} and {high:g}"


class _Decodes:
    """The scenario's per-token times on any variant of its profile, checked as `simulate` checks a profile.
    In graph mode many variants are timed at once by the design-space grid (`speedsim.design.grid`: each
    kernel selection's and on-chip configuration's programs built and served once, every variant's times
    at once); otherwise each method's programs are built once per kernel selection (`KernelRules` and
    dtype), then one engine run per method and variant."""

    def __init__(self, scenario: Scenario, mode: Mode):
        from speedsim.design.grid import Workload

        s = scenario
        self.s, self.mode = s, mode
        self.methods = ("speed", *s.run.baselines)
        self.work = Workload(s.spec, s.sharing, s.traces, s.run.mode, s.run.baselines, s.policy, s.src_len,
                             s.run.device_control)
        self._phases: dict[tuple[KernelRules, str], dict[str, Phase]] = {}
        self._memory: dict[str, Any] = {}

    def check(self, profile: HardwareProfile) -> dict[str, dict[str, float]]:
        """`profile` checked as `simulate` checks it (a what-if of the memory may no longer hold the model,
        of the node no longer hold the deployment): a `UserError`; each method's memory."""
        from speedsim.design.grid import check_point

        return check_point(profile, self.work, self._memory)

    def _engine(self, profile: HardwareProfile) -> dict[str, float]:
        s = self.s
        key = (KernelRules.from_profile(profile), profile.default_dtype)
        phases = self._phases.get(key)
        if phases is None:
            phases = self._phases[key] = build_phases(s.spec, s.sharing, s.traces, profile, s.run.baselines,
                                                      s.policy, s.src_len)[0]
        rt = not s.run.device_control
        return {m: decode_per_token_us(phases[m], profile, self.mode, round_trip=rt) for m in self.methods}

    def many(self, profiles: Sequence[HardwareProfile],
             memory: Sequence[Mapping[str, Mapping[str, float]]]) -> list[dict[str, float]]:
        """The per-token times of `profiles`, each passing `check` (which gave its `memory`)."""
        if self.mode != "graph" or not profiles:
            return [self._engine(p) for p in profiles]
        from speedsim.design.grid import grid_of

        grid = grid_of(profiles, [()] * len(profiles), memory, self.work)
        return [{m: float(grid.per_token_us[m][i]) for m in self.methods} for i in range(len(profiles))]


def sensitivity(scenario: Scenario, params: Sequence[str] | None = None, step: float = STEP,
                overrides: Mapping[str, float] | None = None, where: str = "--params") -> SensitivityResult:
    """Every method's elasticity in each of `params` (default: `default_parameters`) of the scenario's
    profile, by central differences at relative step `step` (the module docstring says how).
    `overrides`: what `--set` changed on the profile, for the record."""
    if not (MIN_STEP <= step <= MAX_STEP):
        raise UserError(f"{step:g} is outside [{MIN_STEP:g}, {MAX_STEP:g}]", where="--step")
    s, run = scenario, scenario.run
    profile = s.profile
    paths = _chosen(profile, params, where, s.spec.tp)
    base = simulate(profile, s.spec, s.sharing, list(s.traces), run.mode, run.baselines, s.policy, s.src_len,
                    device_control=run.device_control)
    methods = tuple(m.method for m in base.methods())
    decodes = _Decodes(s, effective_mode(profile, run.mode)[0])  # the mode simulated (a CPU host runs eager)
    known = parameter_paths(profile)
    skipped: dict[str, str] = {}
    # every side of every parameter that the profile takes, checked as `simulate` checks a profile ...
    sides: list[tuple[str, float, float, str, dict[float, str]]] = []  # path, low, high, note, refused
    variants: dict[tuple[str, float], int] = {}  # (path, value) -> index in `profiles`
    profiles: list[HardwareProfile] = [profile]
    memory = [decodes.check(profile)]
    for path in paths:
        value = known[path]
        if value == 0.0:
            skipped[path] = "its value is 0: no relative step"
            continue
        low, high, note = _sides(value, step, _is_integer(profile, path))
        refused: dict[float, str] = {}
        for x in (low, high):
            if x <= 0.0:  # (an integer of 1 stepped down) no logarithm
                refused[x] = "not > 0"
                continue
            try:
                variant = with_overrides(profile, [Override(path, x)], where="")
                CostModel.from_profile(variant, where=f"{path}={x:g}")
                need = decodes.check(variant)
            except UserError as err:
                refused[x] = str(err)
                continue
            variants[(path, x)] = len(profiles)
            profiles.append(variant)
            memory.append(need)
        sides.append((path, low, high, note, refused))
    # ... all timed at once
    timed = decodes.many(profiles, memory)
    at = timed[0]
    rows: list[Difference] = []
    for path, low, high, note, refused in sides:
        value = known[path]
        times = {x: timed[variants[(path, x)]] for x in (low, high) if (path, x) in variants}
        if not times:
            skipped[path] = f"neither {low:g} nor {high:g} is a value the profile takes ({refused[high]})"
            continue
        if len(times) == 2:
            kind, a, b = "central", low, high
            ta, tb = times[low], times[high]
        elif high in times:
            kind, a, b = "forward", value, high
            ta, tb = at, times[high]
            note = _joined(note, f"one-sided: {low:g} is not a value the profile takes ({refused[low]})")
        else:
            kind, a, b = "backward", low, value
            ta, tb = times[low], at
            note = _joined(note, f"one-sided: {high:g} is not a value the profile takes ({refused[high]})")
        span = math.log(b) - math.log(a)
        elasticity = {m: (math.log(tb[m]) - math.log(ta[m])) / span for m in methods}
        rows.append(Difference(path, value, low if low in times else None, high if high in times else None, kind,
                               note, elasticity))
    rows.sort(key=lambda d: -d.magnitude)
    return SensitivityResult(
        profile=profile.name, overrides=dict(overrides or {}), model=s.spec.name, sharing=str(s.sharing),
        mode=base.mode, mode_label=base.mode_label or base.mode, step=step, methods=methods,
        per_token_us={m.method: m.per_token_us for m in base.methods()},
        time_by_cause_us_per_token={m.method: dict(m.time_by_cause_us_per_token) for m in base.methods()},
        parameters=tuple(rows), skipped=skipped)


def _joined(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
