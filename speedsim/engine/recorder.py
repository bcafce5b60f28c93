"""Recording, kept apart from simulating: kernel spans to a DataFrame or a Chrome trace.

The Chrome trace event format ({"ph": "X", "ts", "dur", "pid", "tid"}, microseconds) opens
in Perfetto (ui.perfetto.dev) and chrome://tracing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from speedsim.fileio import OutputKind, head_text, write_text

# Every timeline speedsim writes starts with this marker: the Chrome trace format's own metadata field
# (`otherData`), so Perfetto reads it as before. `--timeline` replaces only a file that starts with it: a
# Chrome trace of the same format written by anything else (a browser's performance trace) is refused.
TIMELINE_MARK = {"otherData": {"generator": "speedsim", "kind": "timeline"}}
TIMELINE_HEAD = json.dumps(TIMELINE_MARK)[:-1]  # what the file's first bytes are
TIMELINE_FILE = OutputKind("a timeline written by speedsim (a Chrome trace starting with its otherData marker)",
                           lambda path: head_text(path, 256).startswith(TIMELINE_HEAD))


class KernelSpan(NamedTuple):
    """One kernel as it ran: on which stream, when and for how long (us), what it moved (bytes)."""

    kernel: str
    stream: int
    start_us: float
    dur_us: float
    dram_bytes: float
    onchip_bytes: float
    program: int


class Recorder:
    """Collects one `KernelSpan` per kernel; exports a DataFrame or a Chrome trace."""

    def __init__(self) -> None:
        self.spans: list[KernelSpan] = []
        self.host: list[tuple[float, str]] = []

    def kernel(self, name: str, stream: int, start_us: float, dur_us: float, dram_bytes: float,
               onchip_bytes: float, program: int) -> None:
        self.spans.append(KernelSpan(name, stream, start_us, dur_us, dram_bytes, onchip_bytes, program))

    def host_spans(self, starts: list[float], mode: str) -> None:
        self.host = [(t, mode) for t in starts]

    def dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(self.spans, columns=list(KernelSpan._fields))

    def chrome_trace(self, offset_programs: int = 0) -> dict:
        events: list[dict] = [
            {"ph": "M", "pid": 0, "name": "process_name", "args": {"name": "host"}},
            {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "device"}},
            {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "memory"}},
        ]
        for i, (t, mode) in enumerate(self.host):
            events.append({"ph": "i", "pid": 0, "tid": 0, "ts": t, "name": f"issue step {i} ({mode})", "s": "t"})
        for name, stream, start, dur, dram, chip, prog in self.spans:
            if prog < offset_programs:
                continue
            events.append({"ph": "X", "pid": 1, "tid": stream, "ts": start, "dur": dur, "name": name,
                           "args": {"dram_bytes": dram, "onchip_bytes": chip, "step": prog}})
            if dram:
                events.append({"ph": "X", "pid": 2, "tid": 0, "ts": start, "dur": dur, "name": "dram",
                               "args": {"bytes": dram, "GBps": dram / dur / 1e3 if dur else 0.0}})
        return {**TIMELINE_MARK, "traceEvents": events, "displayTimeUnit": "ns"}

    def write_chrome_trace(self, path: Path) -> None:
        """Write the Chrome trace (opens in Perfetto) atomically."""
        write_text(path, json.dumps(self.chrome_trace()))


def merged_chrome_trace(recorders: Mapping[str, Recorder]) -> dict:
    """One Chrome trace of several runs side by side (say SPEED and each baseline): run i's
    processes get ids 10 i + (0 host, 1 device, 2 memory) and names prefixed with its label."""
    events: list[dict] = []
    for i, (label, rec) in enumerate(recorders.items()):
        for event in rec.chrome_trace()["traceEvents"]:
            e = {**event, "pid": event["pid"] + 10 * i}
            if e["ph"] == "M" and e.get("name") == "process_name":
                e["args"] = {"name": f"{label}: {e['args']['name']}"}
            events.append(e)
    return {**TIMELINE_MARK, "traceEvents": events, "displayTimeUnit": "ns"}
