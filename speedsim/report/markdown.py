"""Markdown tables and the report's number formats, shared by every module that writes text."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from speedsim.fileio import write_text


def md_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table: one header row, then one row per dict (a missing cell is blank)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def us(x: float, whole_from: float = 100.0) -> str:
    """A time in µs: one decimal, in whole µs from `whole_from` up, thousands separated; "n/a" for NaN.

    The report's prose rounds to whole µs from 100 µs; the terminal tables (`whole_from=math.inf`)
    always keep the decimal.
    """
    if x != x:
        return "n/a"
    return f"{x:,.0f}" if x >= whole_from else f"{x:,.1f}"


def times(x: float) -> str:
    """A ratio such as a speedup: "1.23x"; "n/a" for NaN."""
    return "n/a" if x != x else f"{x:.2f}x"


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal: "8.4%"; "n/a" for NaN."""
    return "n/a" if x != x else f"{x:.1%}"


def whole(x) -> str:
    """An integer cell ("12"), blank where the value is missing or not a number."""
    try:
        return str(int(x))
    except (TypeError, ValueError):
        return ""


def write_markdown(path: Path, lines: Sequence[str | None]) -> Path:
    """Join `lines` (None left out), fold a triple newline left by an empty part, end with one newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line for line in lines if line is not None).replace("\n\n\n", "\n\n")
    write_text(path, text.rstrip() + "\n")  # atomically; a link at `path` is replaced, never written through
    return path
