"""How fine-tuning batches are padded, and what it costs: padded tokens over an epoch and the
time of training steps, for `fixed_shape`, padding to the longest, and `pad_multiple`.

    python experiments/models/bench_padding.py [--config experiments/models/gpu/4x3.yaml]
        [--device cpu|cuda] [--steps 8] [--batch-size 16] [--multiple 16]

Each mode trains a fresh copy of the config's model (same initial weights) on the first
`--steps` batches of its own stream. The first call of each shape those steps meet is timed
apart (on a GPU a new shape pays a setup once), after one warm-up step before any mode, so
one-off costs (library handles, lazy kernel loading) do not land on the first mode. Printed
per mode: the epoch's padded source and target tokens over the real ones (an encoder-decoder
config's; a decoder-only config has no source), the number of distinct batch shapes in an
epoch, the mean extra seconds of a shape's first call (first call minus the median step) over
the shapes met, and the median seconds per step and per 1,000 examples. A stage meets about
every shape of an epoch, so it pays about shapes x that extra once. Timings on a shared
machine are noisy: compare the modes of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch

from speedsim.data import Batch, BatchStream, special_ids
from speedsim.model import SharedDecoder, exit_loss
from speedsim.train import load_train_config, prepare_data
from speedsim.train.config import speed_config


def train_step(model: SharedDecoder, opt: torch.optim.Optimizer, b: Batch, dev: torch.device) -> float:
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    with amp:
        src = None if b.src is None else b.src.to(dev)
        mask = None if b.src_pad_mask is None else b.src_pad_mask.to(dev)
        logits = model(src, b.tgt_in.to(dev), mask, b.tgt_pad_mask.to(dev))
        loss = exit_loss(logits.float(), b.labels.to(dev))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item())  # synchronised


def shape(b: Batch) -> tuple[int, int]:
    return (0 if b.src is None else b.src.shape[1], b.tgt_in.shape[1])


def measure(stream: BatchStream, model: SharedDecoder, steps: int, dev: torch.device) -> tuple[float, float]:
    """(mean extra seconds of a shape's first call, median step seconds) over the first `steps` batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [stream[s] for s in range(steps)]
    first: dict[tuple[int, int], float] = {}
    for b in batches:  # the first call of each shape, timed apart
        if shape(b) not in first:
            t0 = time.perf_counter()
            train_step(model, opt, b, dev)
            first[shape(b)] = time.perf_counter() - t0
    times = []
    for b in batches:
        t0 = time.perf_counter()
        train_step(model, opt, b, dev)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return statistics.mean(first.values()) - med, med


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", default="experiments/models/gpu/4x3.yaml")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--multiple", type=int, default=16)
    args = ap.parse_args()
    cfg = load_train_config(args.config)
    tok, enc = prepare_data(cfg)
    items, pad = enc["train"], special_ids(tok)["pad"]
    caps = (cfg.data.max_src_tokens, cfg.data.max_tgt_tokens)
    real_src = sum(len(it.src) for it in items)
    real_tgt = sum(len(it.tgt) - 1 for it in items)
    dev = torch.device(args.device)
    torch.set_num_threads(cfg.threads)
    streams = {
        "fixed_shape": BatchStream(items, args.batch_size, cfg.seed, pad, cfg.decoder_only, pad_to=caps),
        "longest": BatchStream(items, args.batch_size, cfg.seed, pad, cfg.decoder_only),
        f"pad_multiple={args.multiple}": BatchStream(items, args.batch_size, cfg.seed, pad, cfg.decoder_only,
                                                     pad_multiple=args.multiple, caps=caps),
    }
    warm = SharedDecoder(speed_config(cfg, tok.get_vocab_size())).to(dev)  # one-off costs, before any mode
    train_step(warm, torch.optim.AdamW(warm.parameters()), streams["fixed_shape"][0], dev)
    del warm
    out = sys.stdout.write
    out(f"{args.config}: {len(items)} training pairs, batch {args.batch_size}, {args.steps} timed steps, {dev}\n")
    out(f"{'mode':18s} {'src pad':>8s} {'tgt pad':>8s} {'shapes':>7s} {'extra s':>8s} {'s/step':>8s} {'s/1k ex':>8s}\n")
    for name, stream in streams.items():
        shapes = [shape(stream[s]) for s in range(stream.per_epoch)]
        src = sum(s for s, _ in shapes) * args.batch_size
        tgt = sum(t for _, t in shapes) * args.batch_size
        model = SharedDecoder(speed_config(cfg, tok.get_vocab_size())).to(dev)  # the same initial weights each time
        setup, med = measure(stream, model, args.steps, dev)
        out(f"{name:18s} {src / real_src:8.2f} {tgt / real_tgt:8.2f} {len(set(shapes)):7d} {setup:8.2f} {med:8.3f} "
            f"{1000 * med / args.batch_size:8.1f}\n")


if __name__ == "__main__":
    main()
