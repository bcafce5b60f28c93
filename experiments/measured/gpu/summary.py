"""Print a short summary of a run.sh output directory: whole decodes, batched steps, step rows.

Usage: python3 experiments/measured/gpu/summary.py OUT_DIR   (reads decode*.csv, batch.csv, steps.csv)
"""
import sys
from pathlib import Path

import pandas as pd


def _read(path: Path):
    if not path.exists() or path.stat().st_size == 0:
        print(f"{path.name}: missing")
        return None
    df = pd.read_csv(path, keep_default_na=False)
    if df.empty:
        print(f"{path.name}: no rows")
        return None
    return df


def _extra(extra: str, key: str) -> str:
    for item in str(extra).split(";"):
        k, _, v = item.partition("=")
        if k == key:
            return v
    return ""


def decode(df) -> None:
    print("\nwhole decodes (us per emitted token, prefill included; SPEED's speedup over sequential decoding of "
          "the same UxR, and over the unshared decoder of the same depth)")
    print(f"{'weights':14s} {'UxR':5s} {'mode':5s} {'sequential':>10s} {'SPEED':>8s} {'speedup':>7s} {'vs deep':>7s} "
          f"{'steps/tok':>9s} {'host/step':>9s} {'1st=final':>9s} {'match':>5s} {'repeat':>6s} {'graphs':>6s} {'prefill':>8s}")
    df = df.assign(weights=df.extra.map(lambda e: _extra(e, "weights")))
    deep = {(w, L, m): us for w, L, R, m, us, p in zip(df.weights, df.L, df.R, df["mode"], df.us_median, df.pattern)
            if R == 1 and p == "sequential"}
    for (weights, L, R, mode), g in df.groupby(["weights", "L", "R", "mode"], sort=False):
        seq = g[g.pattern == "sequential"]
        spd = g[g.pattern == "pipelined"]
        s_us = seq.us_median.iloc[0] if len(seq) else float("nan")
        p_us = spd.us_median.iloc[0] if len(spd) else float("nan")
        row = spd.iloc[0] if len(spd) else seq.iloc[0]
        steps = int(_extra(row.extra, "steps") or 0) / max(1, int(_extra(row.extra, "tokens") or 1))
        d_us = deep.get((weights, L * R, mode), float("nan"))
        print(f"{weights:14s} {str(L) + 'x' + str(R):5s} {mode:5s} {s_us:10.1f} {p_us:8.1f} {s_us / p_us:7.2f} "
              f"{d_us / p_us:7.2f} {steps:9.2f} "
              f"{_extra(row.extra, 'host_us_per_step'):>9s} {_extra(row.extra, 'first_exit_agree'):>9s} "
              f"{_extra(row.extra, 'greedy_match'):>5s} {_extra(row.extra, 'repeat_match'):>6s} "
              f"{_extra(row.extra, 'graphs'):>6s} {_extra(row.extra, 'prefill_us_per_seq'):>8s}")


def batch(df) -> None:
    print("\nbatched decode steps (us per step; columns: sequences B)")
    sizes = sorted(df.n.unique())
    print(f"{'pattern':10s} {'UxR':5s} {'ctx':>4s} {'mode':5s} " + " ".join(f"{b:>8d}" for b in sizes))
    for (pattern, L, R, mode), g in df.groupby(["pattern", "L", "R", "mode"], sort=False):
        # rows of one nominal ctx come in B order; split them where B starts again
        runs, cur = [], []
        for _, r in g.iterrows():
            if cur and r.n <= cur[-1].n:
                runs.append(cur)
                cur = []
            cur.append(r)
        runs.append(cur)
        for run in runs:
            by_n = {r.n: r.us_median for r in run}
            ctx = round(sum(r.ctx for r in run) / len(run))
            print(f"{pattern:10s} {L}x{R:<3d} {ctx:4d} {mode:5s} "
                  + " ".join(f"{by_n[b]:8.1f}" if b in by_n else f"{'':8s}" for b in sizes))


def steps(df) -> None:
    print(f"\nstep rows: {len(df)} ({', '.join(f'{k} {v}' for k, v in df.section.value_counts().items())})")


def main(out: Path) -> None:
    frames = [df for name in ("decode.csv", "decode-tied.csv") if (df := _read(out / name)) is not None]
    if frames:
        decode(pd.concat(frames, ignore_index=True))
    for name, fn in (("batch.csv", batch), ("steps.csv", steps)):
        df = _read(out / name)
        if df is not None:
            fn(df)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
