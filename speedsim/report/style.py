"""The look shared by every figure of the report (colours, markers) and its deterministic PNG writer.

Rendering uses the Agg backend and PNGs are saved without a timestamp or software tag, so the
same data gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from speedsim.fileio import atomic_write  # noqa: E402

TAB10: list[tuple[float, ...]] = [tuple(c) for c in plt.get_cmap("tab10")(range(10))]  # the ten tab10 colours

METHOD_STYLE = {
    "speed": {"label": "SPEED (shared, pipelined)", "color": "tab:green", "marker": "o"},
    "sequential": {"label": "shared, sequential", "color": "tab:orange", "marker": "s"},
    "unshared": {"label": "unshared, same depth", "color": "tab:blue", "marker": "^"},
}
DPI = 100


def finish_panel(ax, title: str, xlabel: str, ylabel: str) -> None:
    """The common end of a panel: its title and axis labels, y from 0, a light grid, a small legend."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def save(fig, path: Path) -> Path:
    """Write a figure deterministically (no timestamp, no software tag) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:  # a link at `path` is replaced, never written through
        fig.savefig(fh, format=path.suffix.lstrip(".") or None, dpi=DPI, metadata={"Software": None},
                    bbox_inches="tight")
    plt.close(fig)
    return path
