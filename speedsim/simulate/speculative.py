"""Speculative decoding on the simulator: self-speculation from an early exit and a draft model, beside SPEED.

Each sequence's iterations come from which drafts match the greedy token along the greedy path
(`speedsim.pipeline.speculation`): for `selfspec` (draft exit e) exit e's predictions in the exit trace;
for `specdec` a draft model's predictions on the target's path (a draft trace: `speedsim trace
--draft-checkpoint`) or i.i.d. acceptance with probability alpha (Leviathan et al. 2023's model). The
programs of an iteration, each issued as one step with the host round trip every step pays:

- a draft step per drafted token: `selfspec` one token through repeats 0..e of the shared layers and
  the head (exit e); `specdec` one token through the draft model's layers and its own head (its first
  step of an iteration also consumes the committed tokens it has not seen: one, or two after a fully
  accepted window);
- one verify step of g + 1 tokens through the target's full depth (`selfspec`: repeats 0..e only for
  the last draft, whose earlier repeats no draft step ran; the drafted positions reuse theirs, as the
  functional decoder does), its head over the g + 1 positions;
- a KV rollback, which moves a length and costs nothing on the device.

The draft model (`specdec`) has its own weights, KV cache and, for an encoder-decoder, encoder and cross
K/V, all in device memory beside the target's (tensor ids prefixed `draft.`); its prefill runs with the
target's. `gamma=None` is `auto`: the window in 1..`AUTO_GAMMA` with the least time per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from speedsim import defaults, limits
from speedsim.engine import Mode
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.pipeline.speculation import (
    Acceptance,
    AcceptanceModel,
    Iteration,
    acceptance,
    draft_matches,
    iid_matches,
    iterations,
    self_spec_matches,
)
from speedsim.sharing import Sharing
from speedsim.simulate.phases import Phase, source_len
from speedsim.simulate.result import MethodResult
from speedsim.trace.schema import ExitTrace
from speedsim.workload import KernelRules
from speedsim.workload.kernels import Program
from speedsim.workload.models import ModelSpec
from speedsim.workload.steps import Seq, StepContext, memory_footprint, prefill, window_batch, with_source

SPECULATIVE = ("selfspec", "specdec")
AUTO_GAMMA = 10          # `auto` tries windows 1..AUTO_GAMMA
DRAFT = "draft."         # prefix of the draft model's tensor ids


@dataclass(frozen=True)
class Speculation:
    """One speculative method of a run. `gamma` None: auto."""

    method: Literal["selfspec", "specdec"]
    gamma: int | None = None
    draft_exit: int = 0                          # selfspec: the exit the drafts come from (0-based)
    draft_spec: ModelSpec | None = None          # specdec: the draft model's dimensions
    draft_depth: int = 0                         # specdec: its decoder layers
    draft_traces: tuple[ExitTrace, ...] | None = None  # specdec: its predictions on the target's path
    alpha: float | None = None                   # specdec without a draft trace: i.i.d. acceptance
    fitted: AcceptanceModel | None = None        # ... or a two-state model fitted to a draft trace
    seed: int = defaults.SEED                    # of the i.i.d. acceptance draws (sequence i: seed + i)
    where: str = "--draft-trace"                 # where the draft trace came from, for messages

    def matches(self, traces: Sequence[ExitTrace]) -> list[list[bool]]:
        """Per sequence, per position: whether the draft of that position is the greedy token."""
        if self.method == "selfspec":
            return [self_spec_matches(t.exits, self.draft_exit) for t in traces]
        if self.draft_traces is not None:
            return _draft_trace_matches(traces, self.draft_traces, self.where)
        if self.fitted is not None:
            return [self.fitted.matches(len(t.exits), self.seed + i) for i, t in enumerate(traces)]
        assert self.alpha is not None
        return [iid_matches(len(t.exits), self.alpha, self.seed + i) for i, t in enumerate(traces)]

    def draft_ctx(self, ctx: StepContext) -> StepContext:
        """The draft model's context for a sequence of the target's `ctx` (same source, own weights)."""
        assert self.draft_spec is not None
        return StepContext(with_source(self.draft_spec, ctx.src_len) if ctx.encoder_decoder else self.draft_spec,
                           Sharing(self.draft_depth, 1), ctx.src_len, ctx.dtype, ctx.rules, weights=DRAFT)


def check_draft_trace(drafts: Sequence[ExitTrace], where: str) -> None:
    """A draft trace (`speedsim trace --draft-checkpoint`) has two exits per position: the draft's prediction,
    the target's token."""
    for d in drafts:
        if d.repeats != 2:
            raise UserError(f"sequence '{d.seq_id}' has {d.repeats} exits per position; a draft trace has two (the "
                            "draft's prediction, the target's token: speedsim trace --draft-checkpoint)", where=where)


def _draft_trace_matches(traces: Sequence[ExitTrace], drafts: Sequence[ExitTrace], where: str) -> list[list[bool]]:
    check_draft_trace(drafts, where)
    by_id = {d.seq_id: d for d in drafts}
    out = []
    for t in traces:
        d = by_id.get(t.seq_id)
        if d is None:
            raise UserError(f"has no sequence '{t.seq_id}' of the target's trace", where=where)
        if d.tokens[: len(t.exits)] != t.tokens:
            raise UserError(f"sequence '{t.seq_id}' is not on the target's path: its target tokens differ from the "
                            "target trace's", where=where)
        out.append(draft_matches(t.tokens, [row[0] for row in d.exits[: len(t.exits)]]))
    return out


def check_speculation(s: Speculation, spec: ModelSpec, sharing: Sharing) -> None:
    """A `UserError` naming the flag for a method the run cannot have."""
    if s.gamma is not None and not 1 <= s.gamma <= limits.MAX_GAMMA:
        raise UserError(f"must be auto or a window of 1 to {limits.MAX_GAMMA} draft tokens, got {s.gamma}",
                        where="--gamma")
    if s.method == "selfspec":
        if sharing.repeats < 2:
            raise UserError(f"a {sharing} model has one exit: no earlier exit to draft from (selfspec needs R >= 2)",
                            where="--draft-exit")
        if not 0 <= s.draft_exit < sharing.repeats - 1:
            raise UserError(f"{s.draft_exit} is not an exit before the last of a {sharing} model (0..{sharing.repeats - 2})",
                            where="--draft-exit")
        return
    d = s.draft_spec
    if d is None or s.draft_depth < 1:
        raise UserError("specdec needs a draft model: --draft-model NAME and --draft-depth L", where="--draft-depth")
    if d.vocab != spec.vocab:
        raise UserError(f"the draft model {d.name} has a vocabulary of {d.vocab:,}, the target {spec.name} "
                        f"{spec.vocab:,}: a draft must share the target's", where="--draft-model")
    if bool(d.cross_attention_len) != bool(spec.cross_attention_len):
        raise UserError(f"the draft model {d.name} and the target {spec.name} must both be encoder-decoder or both "
                        "decoder-only", where="--draft-model")
    # smaller in the work of a token: a draft as deep and wide as the target's depth saves nothing
    draft_w = s.draft_depth * d.layer_weight_elements()
    target_w = sharing.depth * spec.layer_weight_elements()
    if draft_w >= target_w:
        raise UserError(f"the draft ({s.draft_depth} layers of {d.name}, {draft_w / 1e6:,.1f}M weights a token) is not "
                        f"smaller than the target ({sharing} {spec.name}, {target_w / 1e6:,.1f}M a token)",
                        where="--draft-depth")
    if sum(x is not None for x in (s.draft_traces, s.alpha, s.fitted)) != 1:
        raise UserError("give the draft's acceptance: --draft-trace FILE, --draft-accept A or --draft-fit FILE",
                        where="--draft-accept")
    if s.alpha is not None and not 0.0 <= s.alpha < 1.0:
        raise UserError(f"must be in [0, 1), got {s.alpha}", where="--draft-accept")


def speculative_phase(spec: ModelSpec, sharing: Sharing, traces: Sequence[ExitTrace], profile: HardwareProfile,
                      s: Speculation, gamma: int, src_len: int | None,
                      matches: Sequence[Sequence[bool]]) -> tuple[Phase, Acceptance]:
    """The method's programs for every sequence at window `gamma`, and its acceptance."""
    rules = KernelRules.from_profile(profile)
    phase = Phase()
    runs = []
    R = sharing.repeats
    for trace, match in zip(traces, matches, strict=True):
        n_src = source_len(spec, trace, src_len)
        ctx = StepContext(with_source(spec, n_src), sharing, n_src, profile.default_dtype, rules)
        seq = Seq(ctx)
        first = prefill(ctx)
        dseq = None
        if s.method == "specdec":
            dseq = Seq(s.draft_ctx(ctx), DRAFT)
            first.extend(prefill(dseq.ctx, prefix=DRAFT))  # (its caches kv.L{u}.r0, as its steps name them)
        phase.add(first, 1, is_prefill=True)
        its = iterations(match, len(trace.exits), gamma)
        runs.append(its)
        for item in spec_items(s, its):
            phase.add(item_batch(s, [(seq, dseq, item)], R), item.emits)
    return phase, acceptance(runs)


@dataclass(frozen=True)
class SpecItem:
    """One step of a sequence's speculative decode: a draft step (`tokens` positions from `position`
    through the drafter: one, or a draft model's catch-up) or a verify step (its window of `tokens`
    positions through the target), and the tokens it emits."""

    kind: Literal["draft", "verify"]
    position: int
    tokens: int
    emits: int


def spec_items(s: Speculation, its: Sequence[Iteration]) -> list[SpecItem]:
    """A sequence's steps after its prefill, in order, for its `iterations`."""
    out: list[SpecItem] = []
    n = done = 1  # tokens committed; positions whose inputs the draft model has consumed
    for it in its:
        for j in range(it.drafted):
            if s.method == "specdec" and j == 0:
                out.append(SpecItem("draft", done, n + 1 - done, 0))
            else:
                out.append(SpecItem("draft", n + j, 1, 0))
        out.append(SpecItem("verify", n, it.drafted + 1, it.emitted))
        if s.method == "specdec" and it.drafted:
            done = n + min(it.accepted, it.drafted - 1) + 1
        n += it.emitted
    return out


def item_batch(s: Speculation, work: Sequence[tuple[Seq, Seq | None, SpecItem]], repeats: int) -> Program:
    """One step over a batch of sequences' items, all drafts or all verifies: the drafts through the
    drafter (repeats 0..e of the shared layers, or the draft model's layers and head on the last row of
    each), the verifies through the target's `repeats` (self-speculation reusing the drafts' repeats 0..e)."""
    kind = work[0][2].kind
    if kind == "draft" and s.method == "selfspec":
        return window_batch([(seq, it.position, it.tokens) for seq, _, it in work], range(s.draft_exit + 1))
    if kind == "draft":
        return window_batch([(dseq, it.position, it.tokens) for _, dseq, it in work if dseq is not None], range(1),
                            head_rows=[1] * len(work))
    # (a window of one token, nothing drafted, runs the same with or without the reuse: its one token)
    return window_batch([(seq, it.position, it.tokens) for seq, _, it in work], range(repeats),
                        reused=s.draft_exit + 1 if s.method == "selfspec" else 0)


def speculative_memory(s: Speculation, target: dict[str, float], spec: ModelSpec, traces: Sequence[ExitTrace],
                       src_len: int | None, dtype: str) -> dict[str, float]:
    """The method's footprint: the target's, plus (specdec) the draft model's weights, embeddings and caches."""
    if s.method != "specdec":
        return dict(target)
    assert s.draft_spec is not None
    longest = max((len(t.exits) for t in traces), default=1)
    src = max((source_len(spec, t, src_len) for t in traces), default=1)
    d = with_source(s.draft_spec, src) if s.draft_spec.cross_attention_len else s.draft_spec
    positions = longest + (0 if d.cross_attention_len else src)
    draft = memory_footprint(d, Sharing(s.draft_depth, 1), positions, src, dtype)
    out = {k: v for k, v in target.items() if k != "total"}
    out |= {f"draft_{k}": v for k, v in draft.items() if k != "total"}
    out["total"] = target["total"] + draft["total"]
    return out


def check_window(s: Speculation, traces: Sequence[ExitTrace]) -> None:
    """A `UserError` at --gamma for a window no sequence can fill: the first window drafts positions 1..g, and
    the last position (the verifier's own token) is never drafted, so a sequence of L tokens drafts at most
    L - 2 at once."""
    longest = max((len(t.exits) for t in traces), default=3)
    if s.gamma is not None and s.gamma > max(longest - 2, 1):
        raise UserError(f"a window of {s.gamma} draft tokens is longer than any sequence can draft (the longest has "
                        f"{longest} tokens: at most {max(longest - 2, 1)} drafts at once)", where="--gamma")


def best_window(s: Speculation, profile: HardwareProfile, spec: ModelSpec, sharing: Sharing,
                traces: Sequence[ExitTrace], mode: Mode, src_len: int | None, round_trip: bool = True
                ) -> tuple[int, Phase, Acceptance]:
    """(window, programs, acceptance) of the method: at its window, or (auto) the window of 1..AUTO_GAMMA whose
    decode of `traces`, one at a time, takes the least time per token."""
    from speedsim.simulate.core import decode_per_token_us

    matches = s.matches(traces)
    check_window(s, traces)
    longest = max((len(t.exits) for t in traces), default=3)
    gammas = [s.gamma] if s.gamma is not None else list(range(1, max(1, min(AUTO_GAMMA, longest - 2)) + 1))
    best: tuple[float, int, Phase, Acceptance] | None = None
    for g in gammas:
        phase, acc = speculative_phase(spec, sharing, traces, profile, s, g, src_len, matches)
        t = decode_per_token_us(phase, profile, mode, round_trip) if len(gammas) > 1 else 0.0
        if best is None or t < best[0]:
            best = (t, g, phase, acc)
    assert best is not None
    return best[1], best[2], best[3]


def draft_weights_bytes(s: Speculation, dtype: str) -> float:
    """Device memory of the draft model's weights (layers, encoder, embeddings and head): 0 for selfspec."""
    if s.method != "specdec" or s.draft_spec is None:
        return 0.0
    need = memory_footprint(s.draft_spec, Sharing(s.draft_depth, 1), 1, 1, dtype)
    return need["weights"] + need["embeddings"]


def simulate_speculative(s: Speculation, profile: HardwareProfile, spec: ModelSpec, sharing: Sharing,
                         traces: Sequence[ExitTrace], mode: Mode, src_len: int | None, round_trip: bool,
                         memory: dict[str, float], recorder=None) -> MethodResult:
    """One speculative method's `MethodResult` (speedup still 1), at its window or the best of 1..AUTO_GAMMA."""
    from speedsim.simulate.core import summarise

    gamma, phase, acc = best_window(s, profile, spec, sharing, traces, mode, src_len, round_trip)
    result = summarise(s.method, phase, profile, mode, recorder, round_trip=round_trip, memory=memory)
    return replace(result, gamma=float(gamma), acceptance_rate=acc.rate if acc.drafted else math.nan,
                   tokens_per_iteration=acc.tokens_per_iteration)
