"""The SPEED pipeline controller: exit predictions in, schedule steps out.

One controller drives both uses:

- **live**: a decoder asks `work()` for the tokens to compute this step, runs them through
  the model (one batched pass, each token at its own repeat), and hands the exit
  predictions to `advance()`, which returns the `Step` record and updates the pipeline;
- **replay**: `replay(trace, policy)` answers `advance()` from a recorded `ExitTrace`
  instead of a model and returns the same kind of steps, so the hardware simulator can
  rebuild SPEED's schedule from a trace alone.

Conventions. Generated positions are numbered t = 0, 1, ...; computing position t means
feeding it its input token (the output of position t - 1) and running it through the R
repeats, producing exits[t][0..R-1]. Position 0 belongs to the prefill (the prompt's last
token, or BOS for an encoder-decoder, through all R repeats), so its exits are known before
the first step and the pipeline starts by launching position 1 from its final token. One
step advances every in-flight token by one repeat.

Rules, applied at the end of a step in position order (the oldest token first):

1. a token at the launch exit (policy.launch_exit) records its prediction; the successor
   is launched from it at the next step, if there is room (policy.max_in_flight);
2. a token at a verify exit compares its prediction with the input its successor was
   launched from; on a difference it *mispredicted*: the successor and everything launched
   after it are flushed (KV entries rolled back by the decoder) and the successor is
   relaunched from the new prediction at the next step. The final exit always verifies,
   which is what makes the output identical to greedy decoding;
3. a token at its final exit is emitted; if it is the EOS id, or the requested number of
   tokens has been emitted, decoding ends and in-flight work is discarded.

What a trace cannot say. A trace holds the exits of each position's surviving computation,
i.e. computed from the correct input. A token launched from a stale prediction that is not
caught at once (its predecessor's next exits agree with the stale value and only a later
exit disagrees) may itself reach exits and launch a successor before it is flushed; a
trace cannot know what such a wrong-path token predicted. `replay` assumes it predicts what
the trace records for its position (and EOS past the end of a trace that stopped on EOS).
Consequences, checked by tests/test_pipeline.py against live decoding:

- always: the surviving computations' schedule (when each token is launched for good and
  emitted, hence the number of steps) is reproduced exactly; it never depends on
  wrong-path predictions;
- R <= 2: the whole step log is reproduced exactly (a stale launch is caught one step later,
  before it reaches an exit);
- R = 3 with the default policy: exactly, except the input ids of tokens launched by
  wrong-path tokens;
- R >= 4 or sparse verify exits: wrong-path tokens can flush each other, so their part of
  the schedule is a model (the trace's statistics stand in for the unknown predictions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from speedsim.errors import UserError


class ExitRecord(Protocol):
    """What `replay` reads of an exit trace (`speedsim.trace.ExitTrace` is one)."""

    @property
    def repeats(self) -> int: ...  # R: exits per position

    @property
    def exits(self) -> Sequence[Sequence[int]]: ...  # exits[t][r]: token predicted at exit r for position t

    @property
    def eos_id(self) -> int | None: ...  # end-of-sequence id, if decoding stopped on it


# ------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class Policy:
    """Which exit launches the next token, which exits verify, how many tokens may be in flight."""

    launch_exit: int = 0  # exit whose prediction launches the successor (0: after the first repeat)
    verify_exits: tuple[int, ...] | None = None  # exits that verify (None: every exit after launch_exit); the final exit always does
    max_in_flight: int | None = None  # most tokens in the pipeline at once (None: R)

    def __post_init__(self) -> None:
        if not isinstance(self.launch_exit, int) or self.launch_exit < 0:
            raise UserError(f"must be an integer >= 0, got {self.launch_exit!r}", where="launch_exit")
        if self.verify_exits is not None:
            v = tuple(self.verify_exits)
            if any(not isinstance(e, int) or e <= self.launch_exit for e in v):
                raise UserError(f"every verify exit must be an integer > launch_exit={self.launch_exit}", where="verify_exits")
            object.__setattr__(self, "verify_exits", tuple(sorted(set(v))))
        if self.max_in_flight is not None and (not isinstance(self.max_in_flight, int) or self.max_in_flight < 1):
            raise UserError(f"must be an integer >= 1, got {self.max_in_flight!r}", where="max_in_flight")

    def check(self, repeats: int) -> None:
        """Raise a UserError if the policy does not fit a model with `repeats` exits."""
        if self.launch_exit >= repeats:
            raise UserError(f"{self.launch_exit} is not an exit of an R={repeats} model", where="launch_exit")
        if self.verify_exits and max(self.verify_exits) >= repeats:
            raise UserError(f"{max(self.verify_exits)} is not an exit of an R={repeats} model", where="verify_exits")

    def verifying(self, repeats: int) -> frozenset[int]:
        """The exits that verify for an R-exit model (always including the final one)."""
        v = range(self.launch_exit + 1, repeats) if self.verify_exits is None else self.verify_exits
        return frozenset(v) | {repeats - 1}

    def capacity(self, repeats: int) -> int:
        return repeats if self.max_in_flight is None else self.max_in_flight


@dataclass(frozen=True)
class Step:
    """One pipeline step: a single batched pass of the in-flight tokens through the U layers."""

    in_flight: tuple[tuple[int, int, int], ...]  # (position, repeat, input_token) of every token computed, oldest first
    launched: tuple[int, ...]  # positions entering at repeat 0 this step (first launch or relaunch)
    flushed: tuple[int, ...]  # positions flushed at the end of this step because of a misprediction
    emitted: tuple[int, ...]  # positions whose final exit was produced this step
    mispredicted: tuple[int, ...] = ()  # positions whose verify exit disagreed with their successor's input
    discarded: tuple[int, ...] = ()  # positions dropped because decoding ended (EOS or length) this step


# ------------------------------------------------------------------------------ the controller
@dataclass
class _Token:
    """A token in the pipeline."""

    input: int  # the token id it was launched with
    repeat: int = 0  # the repeat it computes next
    exits: list[int] = field(default_factory=list)  # predictions at exits 0..repeat-1 of this computation


class PipelineController:
    """Turns exit predictions into SPEED's schedule; see the module docstring for the rules.

    Live use::

        ctrl = PipelineController(R, policy, first_exits, max_new_tokens, eos_id)
        while not ctrl.done:
            work = ctrl.work()                 # (position, repeat, input) to compute
            preds = model_step(work)           # one exit prediction per entry
            step = ctrl.advance(preds)         # what happened, as data

    `first_exits` are the R exit predictions of position 0 (from the prefill).
    """

    def __init__(
        self,
        repeats: int,
        policy: Policy | None,
        first_exits: Sequence[int],
        max_new_tokens: int | None,
        eos_id: int | None = None,
    ):
        self.policy = policy if policy is not None else Policy()
        self.policy.check(repeats)
        if len(first_exits) != repeats:
            raise ValueError(f"position 0 needs {repeats} exit predictions, got {len(first_exits)}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1 (decode nothing without a controller)")
        self.repeats = repeats
        self.max_new_tokens = max_new_tokens
        self.eos_id = eos_id
        self._launch = self.policy.launch_exit
        self._verify = self.policy.verifying(repeats)
        self._capacity = self.policy.capacity(repeats)
        self.tokens: list[int] = []  # emitted tokens, position order
        self.exits: list[list[int]] = []  # exits of the emitted (surviving) computations
        self._pred: dict[int, int] = {}  # latest acted-upon prediction of each position
        self._flight: dict[int, _Token] = {}  # in-flight tokens by position (insertion = position order)
        self._next = 1  # next position to launch
        self._launched_now: list[int] = []  # positions launched for the coming step
        self.done = False
        if not self._emit(0, list(first_exits)):
            self._fill()

    # -------------------------------------------------------------- live interface
    def work(self) -> tuple[tuple[int, int, int], ...]:
        """(position, repeat, input_token) of every token to compute in the next step, oldest first."""
        return tuple((p, tok.repeat, tok.input) for p, tok in self._flight.items())

    def advance(self, predictions: Sequence[int]) -> Step:
        """Apply one step's exit predictions (one per `work()` entry, same order); return the Step."""
        work = self.work()
        if self.done:
            raise RuntimeError("decoding has ended")
        if len(predictions) != len(work):
            raise ValueError(f"{len(predictions)} predictions for {len(work)} tokens in flight")
        launched = tuple(self._launched_now)
        flushed: list[int] = []
        emitted: list[int] = []
        mispredicted: list[int] = []
        discarded: list[int] = []
        for (p, r, _), y in zip(work, predictions, strict=True):
            if p not in self._flight:
                continue  # flushed earlier in this step by an older token
            tok = self._flight[p]
            tok.exits.append(int(y))
            tok.repeat = r + 1
            if r == self._launch or r in self._verify:
                self._pred[p] = int(y)
                succ = self._flight.get(p + 1)
                if succ is not None and succ.input != int(y):
                    mispredicted.append(p)
                    flushed.extend(self._flush_after(p))
            if r == self.repeats - 1:
                del self._flight[p]
                emitted.append(p)
                if self._emit(p, tok.exits):
                    discarded.extend(self._flush_after(p))
                    break
        self._launched_now = []
        if not self.done:
            self._fill()
        return Step(
            in_flight=work,
            launched=launched,
            flushed=tuple(flushed),
            emitted=tuple(emitted),
            mispredicted=tuple(mispredicted),
            discarded=tuple(discarded),
        )

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    # -------------------------------------------------------------- internals
    def _emit(self, p: int, exits: list[int]) -> bool:
        """Record position p's final output; True if decoding ends with it."""
        assert p == len(self.tokens), "tokens are emitted in position order"
        token = exits[-1]
        self.tokens.append(token)
        self.exits.append(list(exits))
        self._pred[p] = token
        if (self.eos_id is not None and token == self.eos_id) or (
            self.max_new_tokens is not None and len(self.tokens) >= self.max_new_tokens
        ):
            self.done = True
        return self.done

    def _flush_after(self, p: int) -> list[int]:
        """Drop every in-flight position after p; the next launch is p + 1 again."""
        gone = [q for q in self._flight if q > p]
        for q in gone:
            del self._flight[q]
            self._pred.pop(q, None)
        self._next = min(self._next, p + 1)
        return gone

    def _fill(self) -> None:
        """Launch successors whose predecessor has a prediction, while there is room."""
        while (
            (self.max_new_tokens is None or self._next < self.max_new_tokens)
            and len(self._flight) < self._capacity
            and (self._next - 1) in self._pred
        ):
            p = self._next
            self._flight[p] = _Token(input=self._pred[p - 1])
            self._launched_now.append(p)
            self._next += 1
        if not self._flight:
            self.done = True  # nothing left to compute (cannot happen before the end)


# ------------------------------------------------------------------------------ replay
def run_controller(ctrl: PipelineController, predict: Callable[[int, int, int], int]) -> list[Step]:
    """Drive `ctrl` to the end with `predict(position, repeat, input_token) -> token`."""
    steps = []
    while not ctrl.done:
        work = ctrl.work()
        steps.append(ctrl.advance([predict(p, r, x) for p, r, x in work]))
    return steps


def replay(trace: ExitRecord, policy: Policy | None = None, max_new_tokens: int | None = None) -> list[Step]:
    """The schedule SPEED follows for a recorded exit trace, from its exits alone.

    A computation at position t predicts `trace.exits[t][r]` at exit r (whatever its input:
    see the module docstring for what a trace cannot know). Decoding ends after the trace's
    last position; if the trace stopped on EOS, speculative tokens launched past it predict
    EOS and are discarded when it is emitted. `max_new_tokens` (default: the trace's length,
    unbounded if it stopped on EOS) caps launches as the live decoder's cap did.
    """
    if not trace.exits:
        return []
    n = len(trace.exits)
    stopped_on_eos = trace.eos_id is not None and trace.exits[-1][-1] == trace.eos_id
    if max_new_tokens is None:
        max_new_tokens = None if stopped_on_eos else n
    ctrl = PipelineController(trace.repeats, policy, trace.exits[0], max_new_tokens, trace.eos_id if stopped_on_eos else None)

    def predict(p: int, r: int, _x: int) -> int:
        if p < n:
            return trace.exits[p][r]
        assert trace.eos_id is not None
        return trace.eos_id

    steps = run_controller(ctrl, predict)
    return steps
