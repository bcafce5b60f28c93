"""Wall-clock per emitted token: sequential greedy vs SPEED pipelined greedy, on this CPU, batch 1.

Both decoders run the same parameter-shared model on the same sources; greedy runs the U
layers R times per token (LM head once), SPEED runs one batched pass per step over the
in-flight tokens (LM head at every exit). Each source is decoded by both, interleaved, for
`--runs` rounds; per-token time = decode wall time (prefill included, it is the same for
both) / emitted tokens, summed over sources; medians over rounds.

    python experiments/bench_decode_cpu.py                       # random-weight 4x3, d_model 256
    python experiments/bench_decode_cpu.py --checkpoint checkpoints/4x3 --sources 16

A random-weight model's exits rarely disagree (its residual stream is dominated by the input
embedding), so it shows SPEED's best case; a trained checkpoint shows realistic flushes.
`--init-std` larger than 0.02 gives a random model that mispredicts often.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from click import echo

from speedsim.decode import greedy, speed
from speedsim.model import SharedDecoder, SpeedConfig
from speedsim.pipeline import schedule_stats


def random_model(args: argparse.Namespace) -> tuple[SharedDecoder, list[list[int]], int | None]:
    U, R = (int(x) for x in args.sharing.split("x"))
    cfg = SpeedConfig(
        vocab_size=args.vocab, d_model=args.d_model, n_heads=args.n_heads, d_ff=args.d_ff, unique_layers=U, repeats=R,
        encoder_layers=args.encoder_layers, max_len=args.src_len + args.max_new_tokens + 1, init_std=args.init_std,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    sources = [torch.randint(3, args.vocab, (args.src_len,), generator=g).tolist() for _ in range(args.sources)]
    return SharedDecoder(cfg).eval(), sources, None


def checkpoint_model(args: argparse.Namespace) -> tuple[SharedDecoder, list[list[int]], int | None]:
    from speedsim.data import special_ids
    from speedsim.train import load_model, prepare_data

    model, tok, cfg = load_model(args.checkpoint)
    _, splits = prepare_data(cfg, tok)
    sources = [it.src for it in splits["test"][: args.sources]]
    return model, sources, special_ids(tok)["eos"]


def timed(fn, *a, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="checkpoint directory written by `speedsim train` (default: random weights)")
    ap.add_argument("--sharing", default="4x3", help="UxR of the random model")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-heads", type=int, default=4)
    ap.add_argument("--d-ff", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--encoder-layers", type=int, default=2)
    ap.add_argument("--init-std", type=float, default=0.02)
    ap.add_argument("--src-len", type=int, default=64, help="source length of the random model's inputs, tokens")
    ap.add_argument("--sources", type=int, default=4, help="sources decoded per round")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5, help="rounds; medians are over rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model, sources, eos = checkpoint_model(args) if args.checkpoint else random_model(args)
    c = model.config
    greedy_ms, speed_ms, mismatches = [], [], 0
    stats = None
    with torch.no_grad():
        greedy(model, sources[0], 4, eos)  # warm-up
        speed(model, sources[0], 4, eos)
        for _ in range(args.runs):
            tg = ts = 0.0
            ng = ns = 0
            schedules = []
            for src in sources:
                dt, out_g = timed(greedy, model, src, args.max_new_tokens, eos)
                tg, ng = tg + dt, ng + len(out_g)
                dt, res = timed(speed, model, src, args.max_new_tokens, eos)
                ts, ns = ts + dt, ns + len(res.tokens)
                mismatches += res.tokens != out_g
                schedules.append(res.steps)
            greedy_ms.append(1e3 * tg / ng)
            speed_ms.append(1e3 * ts / ns)
            stats = schedule_stats(schedules)
    g_med, s_med = statistics.median(greedy_ms), statistics.median(speed_ms)
    out = {
        "model": f"{c.sharing} d_model={c.d_model} d_ff={c.d_ff} heads={c.n_heads} vocab={c.vocab_size} "
        f"encoder_layers={c.encoder_layers}" + (f" checkpoint={args.checkpoint}" if args.checkpoint else " random weights"),
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "sources": len(sources),
        "runs": args.runs,
        "greedy_ms_per_token": g_med,
        "speed_ms_per_token": s_med,
        "speedup": g_med / s_med,
        "greedy_ms_per_token_all_runs": greedy_ms,
        "speed_ms_per_token_all_runs": speed_ms,
        "output_mismatches": mismatches,
        "schedule": stats.to_dict() if stats else None,
    }
    if args.json:
        echo(json.dumps(out))
        return
    echo(f"model: {out['model']}; {args.threads} thread(s); {len(sources)} sources x {args.runs} runs")
    echo(f"sequential greedy : {g_med:8.2f} ms/token (median)")
    echo(f"SPEED pipelined   : {s_med:8.2f} ms/token (median)")
    echo(f"speedup           : {g_med / s_med:8.2f}x")
    if stats:
        echo(
            f"schedule: {stats.emitted} tokens in {stats.steps} steps, {stats.mean_in_flight:.2f} in flight, "
            f"{stats.flushes_per_token:.3f} flushes/token, {stats.wasted_passes} wasted token-passes"
        )
    echo(f"outputs differing from greedy: {mismatches} (float32; only argmax near-ties can differ)")


if __name__ == "__main__":
    main()
