"""The look shared by every figure of the report (colours, markers) and its deterministic PNG writer.

Rendering uses the Agg backend and PNGs are saved without a timestamp or software tag, so the
same data gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TAB10: list[tuple[float, ...]] = [tuple(c) for c in plt.get_cmap("tab10")(range(10))]  # the ten tab10 colours

METHOD_STYLE = {
    "speed": {"label": "SPEED (shared, pipelined)", "color": "tab:green", "marker": "o"},
    "sequential": {"label": "shared, sequential", "color": "tab:orange", "marker": "s"},
    "unshared": {"label": "unshared, same depth", "color": "tab:blue", "marker": "^"},
}
DPI = 100


def save(fig, path: Path) -> Path:
    """Write a figure deterministically (no timestamp, no software tag) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return path
