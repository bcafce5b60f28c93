"""The latency-vs-depth figure draws uncertainty bands from `per_token_us_low`/`_high` where a run
has them (a derived profile run with `--bounds`) and none where it does not (a measured profile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from speedsim.report import figures
from speedsim.simulate.schema import WEIGHT_BUDGET


def _rows(low_high: tuple[float, float] | None) -> pd.DataFrame:
    """Weight-budget rows (U = 3, R = 1..3) of three methods; with the band columns if `low_high`
    gives their offsets (NaN for none)."""
    rows = []
    for r in (1, 2, 3):
        for method, us in (("speed", 100.0), ("sequential", 200.0), ("unshared", 210.0)):
            row = {"status": "ok", "label": WEIGHT_BUDGET, "profile": "p", "U": 3, "R": r, "depth": 3 * r,
                   "method": method, "per_token_us": us * r, "model": "t5base", "mode": "graph",
                   "mispredict": 0.1, "out_len": 32}
            if low_high is not None:
                row |= {"per_token_us_low": us * r - low_high[0], "per_token_us_high": us * r + low_high[1]}
            rows.append(row)
    return pd.DataFrame(rows)


def _bands(monkeypatch: pytest.MonkeyPatch, df: pd.DataFrame, tmp_path: Path) -> list[PolyCollection]:
    """The fill_between patches the figure draws (captured before the figure is closed)."""
    drawn: list[PolyCollection] = []
    real = figures.draw_band

    def spy(ax, *args, **kwargs) -> bool:
        before = len(ax.collections)
        done = real(ax, *args, **kwargs)
        drawn.extend(c for c in ax.collections[before:] if isinstance(c, PolyCollection))
        return done

    monkeypatch.setattr(figures, "draw_band", spy)
    assert figures.latency_vs_depth(df, "p", tmp_path / "f.png") is not None
    return drawn


def test_bands_drawn_when_the_columns_are_finite(monkeypatch, tmp_path):
    """Finite low/high columns: one band per method curve, spanning low..high."""
    bands = _bands(monkeypatch, _rows((10.0, 20.0)), tmp_path)
    assert len(bands) == 3
    ys = np.concatenate([p.vertices[:, 1] for b in bands for p in b.get_paths()])
    assert ys.min() == pytest.approx(2 * 100.0 - 10.0)  # the deep rows (depth >= 6) only
    assert ys.max() == pytest.approx(3 * 210.0 + 20.0)


@pytest.mark.parametrize("low_high", [None, (np.nan, np.nan)], ids=["no-columns", "nan-columns"])
def test_no_bands_without_finite_columns(monkeypatch, tmp_path, low_high):
    """No band columns (a measured profile), or only NaN in them: no band at all."""
    assert _bands(monkeypatch, _rows(low_high), tmp_path) == []


def test_draw_band_reports_nothing_drawn_for_text():
    """Band cells that are not numbers count as missing."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    rows = pd.DataFrame({"per_token_us_low": ["", "x"], "per_token_us_high": ["", "y"]})
    assert figures.draw_band(ax, [1, 2], rows, 1.0, "k") is False
    plt.close(fig)
