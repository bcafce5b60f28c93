"""The operations one step of the measured static decoder runs, against the simulator's kernels.

Counts the ATen ops PyTorch dispatches (a `TorchDispatchMode` counter, on a CPU: the same Python
code and the same ops ran on the GPU, where each non-view op is one kernel or more) for the
prefill, a greedy step and SPEED steps of `speedsim.validation.measure.static` at t5base
dimensions, and the kernels `speedsim.workload.static` builds for the same steps. Writes ops.md
beside this file:

    python experiments/measured/h200/closed-loop/ops.py
"""

from __future__ import annotations

import collections
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from speedsim.decode import prefill
from speedsim.fileio import write_text
from speedsim.hardware import load_profile
from speedsim.sharing import Sharing
from speedsim.validation.measure.loop import static_decoder
from speedsim.validation.measure.models import from_spec
from speedsim.workload import KernelRules, resolve_models
from speedsim.workload.static import greedy_step, prefill_passes, speed_step
from speedsim.workload.steps import StepContext, with_source

HERE = Path(__file__).resolve().parent
# ops that only make a new view of a tensor (no kernel on a GPU)
VIEWS = {"view", "_unsafe_view", "t", "select", "slice", "transpose", "unsqueeze", "unbind", "expand", "alias",
         "as_strided", "detach", "reshape", "permute", "squeeze", "scalar_tensor", "lift_fresh"}


class Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def counted(fn) -> collections.Counter[str]:  # type: ignore[no-untyped-def]
    with torch.no_grad(), Count() as c:
        fn()
    return c.ops


def main() -> None:
    spec = resolve_models((HERE / "decode.t5base.yaml",))["t5base"]
    profile = load_profile("h200")
    rules = KernelRules.from_profile(profile)
    lines = ["# One step of the static decoder, op by op (written by `ops.py`)", "",
             "ATen ops dispatched (on a CPU, t5base dimensions, fp32; the GPU run dispatched the same ops) and "
             "the kernels speedsim builds for the same step (`speedsim.workload.static`). `kernels` counts ops "
             "that are not views.", "",
             "| step | ATen ops | of them kernels | speedsim kernels | largest op counts |", "|---|---|---|---|---|"]
    for u, r in ((12, 1), (4, 3), (2, 6)):
        d = from_spec(spec, Sharing(u, r), "cpu", torch.float32, 1, 128)
        dec = static_decoder(d, graphs=False)
        state = None

        def pre() -> None:
            nonlocal state
            state = prefill(d.model, d.sources[0], 128)
            dec.load(state)
        ctx = StepContext(with_source(spec, 512), Sharing(u, r), 512, profile.default_dtype, rules)
        cases = [(f"{u}x{r} prefill (functional, eager) and load", counted(pre),
                  sum(len(p.kernels) for p in prefill_passes(ctx)))]
        cases.append((f"{u}x{r} greedy step, 64 keys", counted(lambda: dec._run(("greedy", (), 64),
                                                                                torch.tensor([[5], [0], [3]]))),
                      len(greedy_step(ctx, 64).kernels)))
        if r > 1:
            ids = torch.tensor([[5] * r, list(range(r)), [3 + r - i for i in range(r)]])
            cases.append((f"{u}x{r} SPEED step, {r} tokens, 64 keys",
                          counted(lambda: dec._run(("speed", tuple(range(r)), 64), ids)),
                          len(speed_step(ctx, list(range(r)), 64).kernels)))
        for name, ops, kernels in cases:
            real = sum(n for op, n in ops.items() if op not in VIEWS)
            top = ", ".join(f"{op} {n}" for op, n in ops.most_common() if op not in VIEWS)
            lines.append(f"| {name} | {sum(ops.values())} | {real} | {kernels} | {top} |")
    lines += ["", "A speedsim kernel is one fused operation as the step model costs it (an RMSNorm is one kernel; "
              "the model's RMSNorm dispatches pow, mean, add, rsqrt and two muls): the per-step rows "
              "(`speedsim validate --profile h200 --mode graph`) check that the step's device time agrees, not the "
              "count. What the step model lacked for this decoder, and now has: the embedding of every in-flight "
              "row, the length mask, attention over the padded bucket, the hidden-state gather, `where` and "
              "scatter of a SPEED step, the two `index_select` copies per layer when the repeats are not "
              "consecutive, `argmax` and the output copy, and the eager functional prefill with one host read per "
              "repeat.", ""]
    write_text(HERE / "ops.md", "\n".join(lines))


if __name__ == "__main__":
    main()
