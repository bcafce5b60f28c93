"""A small-scale probe of the quality ordering on this CPU: pre-training only, validation loss.

The GPU recipe's deeper models (12x1) and shared ones (4x3, 2x6) end behind 4x1 at equal
data (`reports/models.md`). This probe asks, at a scale this 2-core machine affords (d_model
192, batches of 16 windows of 96 + 96 tokens, 400, 1,000 or 2,000 steps), whether the learning
rate (one for all weights, or a lower one for the layers) or the early exits' share of the loss explain it. It reads only the validation split
(the pre-training windows of `speedsim data build`), never the test split.

    python experiments/models/ablation.py run [--runs DIR] [--only NAME ...] [--lanes 2]
    python experiments/models/ablation.py summary [--runs DIR] [--out FILE.json]

`run` writes each variant's config into RUNS/configs/ and trains it with `speedsim train` in
`--lanes` parallel one-thread lanes (a finished run is skipped, an interrupted one resumes).
`summary` prints the validation loss (final exit, nats/token) of every run every 100 or 250
steps and each exit's at the end, and writes them as JSON (`--out`: a variant whose run is no
longer in RUNS keeps the figures already in the file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from speedsim.train import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "data": {"task": "summarize", "vocab_size": 8192, "max_src_tokens": 192, "max_tgt_tokens": 96},
    "eval": {"val_examples": 64, "rouge_examples": 0, "max_new_tokens": 16},
    "model": {"d_model": 192, "n_heads": 3, "d_ff": 768, "encoder_layers": 2, "max_len": 256},
    "seed": 0,
    "threads": 1,
}


class Variant(NamedTuple):
    unique_layers: int
    repeats: int
    lr: float  # peak learning rate
    steps: int
    exit_weights: list[float] | None = None  # None: the default, w_r ~ r + 1
    layer_lr_scale: float = 1.0  # the transformer layers' LR as a fraction of lr (pretrain.layer_lr_scale)


# A name ending in -signal also adds a learned vector per repeat to the residual stream before each pass (not
# a speedsim model option: the probe trains it in-process, `repeat_signal`).
VARIANTS: dict[str, Variant] = {
    "4x1-lr0.002": Variant(4, 1, 2e-3, 400),
    "12x1-lr0.002": Variant(12, 1, 2e-3, 400),
    "4x3-lr0.002": Variant(4, 3, 2e-3, 400),
    "4x1-lr0.0005": Variant(4, 1, 5e-4, 400),
    "12x1-lr0.0005": Variant(12, 1, 5e-4, 400),
    "4x3-lr0.0005": Variant(4, 3, 5e-4, 400),
    "4x3-lr0.004": Variant(4, 3, 4e-3, 400),
    "4x3-lr0.002-final": Variant(4, 3, 2e-3, 400, [0.0, 0.0, 1.0]),
    "4x3-lr0.002-signal": Variant(4, 3, 2e-3, 400),
    "4x1-lr0.0005-s2000": Variant(4, 1, 5e-4, 2000),
    "12x1-lr0.0005-s2000": Variant(12, 1, 5e-4, 2000),
    "4x3-lr0.002-s2000": Variant(4, 3, 2e-3, 2000),
    # embeddings, positions, norms and LM head at lr, the encoder and decoder layers at a fraction of it
    "4x3-lr0.002-layers0.33": Variant(4, 3, 2e-3, 400, layer_lr_scale=1 / 3),
    "2x6-lr0.002-layers0.33": Variant(2, 6, 2e-3, 400, layer_lr_scale=1 / 3),
    "12x1-lr0.002-layers0.33": Variant(12, 1, 2e-3, 400, layer_lr_scale=1 / 3),
    "4x1-lr0.002-layers0.33": Variant(4, 1, 2e-3, 400, layer_lr_scale=1 / 3),
    "4x3-lr0.002-layers0.11": Variant(4, 3, 2e-3, 400, layer_lr_scale=1 / 9),
    "4x1-lr0.002-layers0.11": Variant(4, 1, 2e-3, 400, layer_lr_scale=1 / 9),
    "2x6-lr0.002": Variant(2, 6, 2e-3, 400),
    "12x1-lr0.002-layers0.11": Variant(12, 1, 2e-3, 400, layer_lr_scale=1 / 9),
    "4x1-lr0.002-layers0.037": Variant(4, 1, 2e-3, 400, layer_lr_scale=1 / 27),
    "2x6-lr0.002-layers0.11": Variant(2, 6, 2e-3, 400, layer_lr_scale=1 / 9),
    "4x3-lr0.002-layers0.11-s1000": Variant(4, 3, 2e-3, 1000, layer_lr_scale=1 / 9),
    "4x1-lr0.002-layers0.11-s1000": Variant(4, 1, 2e-3, 1000, layer_lr_scale=1 / 9),
    "4x3-lr0.002-layers0.11-s2000": Variant(4, 3, 2e-3, 2000, layer_lr_scale=1 / 9),
    "4x1-lr0.002-layers0.11-s2000": Variant(4, 1, 2e-3, 2000, layer_lr_scale=1 / 9),
}


def config(name: str) -> dict[str, Any]:
    v = VARIANTS[name]
    cfg = json.loads(json.dumps(BASE))
    cfg["name"] = "abl-" + name.replace("-final", "-final-only")  # (-signal keeps its name)
    cfg["model"].update(unique_layers=v.unique_layers, repeats=v.repeats)
    if v.exit_weights is not None:
        cfg["model"]["exit_weights"] = v.exit_weights
    long = v.steps > 400  # evaluated every 250 steps
    cfg["pretrain"] = {"steps": v.steps, "batch_size": 16, "lr": v.lr, "warmup_steps": 50, "prefix_tokens": 96,
                       "target_tokens": 96, "checkpoint_every": 200 if long else 100, "eval_every": 250 if long else 100}
    if v.layer_lr_scale != 1:
        cfg["pretrain"]["layer_lr_scale"] = v.layer_lr_scale
    return cfg


def repeat_signal() -> None:
    """Make `speedsim.train` build models whose residual stream gets a learned vector per repeat
    (zero at the start) before each pass of the shared layers: a pass knows which repeat it is
    (the Universal Transformer adds such a signal). Teacher-forced training only."""
    import torch

    import speedsim.train.loop as loop
    from speedsim.model import SharedDecoder

    class WithSignal(SharedDecoder):
        def __init__(self, config: Any):
            super().__init__(config)
            self.repeat_signal = torch.nn.Parameter(torch.zeros(config.repeats, config.d_model))
            first, calls = self.layers[0], [0]
            plain = first.forward

            def forward(x: torch.Tensor, *args: Any) -> torch.Tensor:  # layer 0 starts every repeat
                r = calls[0] % config.repeats
                calls[0] += 1
                return plain(x + self.repeat_signal[r], *args)

            first.forward = forward  # type: ignore[method-assign]

    loop.SharedDecoder = WithSignal  # type: ignore[misc]


def train(runs: Path, name: str) -> str:
    path = runs / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config(name), sort_keys=False))
    args = ["-m", "speedsim.cli", "train"] if not name.endswith("-signal") else [__file__, "train-signal"]
    with open(runs / f"{name}.log", "a") as log:
        rc = subprocess.run([sys.executable, *args, "--config", str(path), "--out", str(runs / name), "--json"],
                            cwd=ROOT, stdout=log, stderr=log).returncode
    return f"{name}: {'done' if rc == 0 else f'FAILED (exit {rc}, see {name}.log)'}"


def summary(runs: Path) -> dict[str, Any]:
    out = {}
    for name in VARIANTS:
        ckpt = runs / name / "pretrain.pt"
        if not ckpt.exists():
            continue
        c = read_checkpoint(ckpt)
        out[name] = {"steps": c["step"], "finished": c["finished"],
                     "val_loss": {r["step"]: r["val_loss"] for r in c["history"] if "val_loss" in r},
                     "val_loss_per_exit": (c.get("val") or {}).get("val_loss_per_exit") or []}
    return out


def table(results: dict[str, Any]) -> str:
    """One markdown table per set of steps at which validation ran (400-step and 2,000-step variants)."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for name in results:
        p = config(name)["pretrain"]
        groups.setdefault(tuple(range(p["eval_every"], p["steps"] + 1, p["eval_every"])), []).append(name)
    out = []
    for steps, names in groups.items():
        lines = ["| variant | " + " | ".join(f"step {s}" for s in steps) + " | end, per exit |",
                 "|---|" + "---:|" * len(steps) + "---|"]
        for name in names:
            r = results[name]
            cells = [f"{r['val_loss'][s]:.3f}" if s in r["val_loss"] else "" for s in steps]
            exits = " · ".join(f"{x:.3f}" for x in r["val_loss_per_exit"]) or "(not finished)"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {exits} |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def main() -> None:
    if sys.argv[1:2] == ["train-signal"]:  # one -signal variant, in this process
        repeat_signal()
        from speedsim.cli import main as cli

        sys.argv = ["speedsim", "train", *sys.argv[2:]]
        cli()
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("command", choices=["run", "summary"])
    ap.add_argument("--runs", type=Path, default=ROOT / "checkpoints" / "ablation")
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), default=None)
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.command == "run":
        with ThreadPoolExecutor(args.lanes) as pool:
            for line in pool.map(lambda n: train(args.runs, n), args.only or list(VARIANTS)):
                sys.stdout.write(line + "\n")
        return
    results = summary(args.runs)
    if args.out and args.out.exists():  # runs no longer on disk keep their recorded results
        kept = json.loads(args.out.read_text())
        for r in kept.values():
            r["val_loss"] = {int(step): loss for step, loss in r["val_loss"].items()}  # JSON keys are text
        results = {n: results.get(n) or kept[n] for n in VARIANTS if n in results or n in kept}
    sys.stdout.write(table(results) + "\n")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
