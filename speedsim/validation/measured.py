"""Reading measured CSVs (columns: `speedsim.validation.schema`) into rows and scenarios."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from speedsim.dtypes import KV_DTYPES, WEIGHT_DTYPES
from speedsim.engine import Mode
from speedsim.errors import UserError
from speedsim.fileio import read_text_input
from speedsim.limits import (
    MAX_COPY_BYTES,
    MAX_DECODE_TOKENS,
    MAX_DEVICES,
    MAX_FFN,
    MAX_GEMM_N,
    MAX_OP_WIDTH,
    MAX_ROW_INTS,
    PLAIN_NUMBER,
    time_problem,
)
from speedsim.sharing import Sharing
from speedsim.userpath import probe, shown
from speedsim.validation.schema import COLUMNS, MEASURED_ONLY, MODES
from speedsim.workload.patterns import CEILING_PATTERNS, GEMV_PATTERNS, SECTIONS

KNOWN_SECTIONS = (*SECTIONS, *(s for s in MEASURED_ONLY if s not in SECTIONS))  # simulated, then measured only


@dataclass(frozen=True)
class MeasuredRow:
    """One measured scenario; `line` is its line number in the file (header = line 1)."""

    line: int
    section: str
    model: str
    mode: str          # "graph", "eager", or "" (mode-independent: one large kernel)
    pattern: str
    n: int
    ctx: int
    L: int
    R: int
    us_median: float
    extra: str = ""
    source: str = ""   # the file it was read from (rows of several files are fitted together)

    @property
    def sharing(self) -> Sharing:
        """The row's UxR: L distinct layers applied R times (a UserError if either is < 1)."""
        return Sharing.parse(f"{self.L}x{self.R}", where=f"{self.source}:{self.line}" if self.source
                             else f"line {self.line}")

    def extra_field(self, name: str) -> str | None:
        """Value of `name=value` in the `extra` column (entries separated by ';')."""
        for item in self.extra.split(";"):
            key, _, value = item.partition("=")
            if key.strip() == name:
                return value.strip()
        return None

    @property
    def key(self) -> tuple:
        """Identity of the simulated scenario (rows that time speedsim's own decoder differ; a batch or
        op row's shape is in its extra column)."""
        return (self.section, self.model, self.pattern, self.n, self.ctx, self.L, self.R,
                self.extra if self.section in ("batch", "op") else "impl=speedsim" in self.extra)

    def as_dict(self) -> dict:
        return {"section": self.section, "model": self.model, "pattern": self.pattern, "n": self.n,
                "ctx": self.ctx, "L": self.L, "R": self.R}


def read_csv_table(path: Path, what: str, required: tuple[str, ...],
                   where: str | None = None) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and (line, row) records of a CSV file; `UserError` naming the file if it is not
    a regular file (a directory; a FIFO, whose read could block), not UTF-8 text, has no rows, a
    column given twice, a missing `required` column, or a row whose cell count differs from the header's."""
    path = Path(path)
    text = read_text_input(path, what, encoding="utf-8-sig", where=where)  # `where`: the flag that named it
    # strict: a quote left open is an error (a lenient reader swallows the rest of the file into one cell);
    # each record's line is the physical line it starts on (a quoted cell may span lines)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines: list[list[str]] = []
    starts: list[int] = []
    end = 0
    try:
        for cells in reader:
            starts.append(end + 1)
            end = reader.line_num
            lines.append(cells)
    except csv.Error as err:
        raise UserError(f"not a readable CSV ({err})", where=f"{path}:{reader.line_num}") from None
    if not lines or not any(cell.strip() for cell in lines[0]):
        raise UserError(f"not a readable CSV: empty, no header ({what})", where=str(path))
    header = [c.strip() for c in lines[0]]
    if required and not set(required) & set(header):  # data where the header should be
        raise UserError(f"the first line is not a header naming the columns ({','.join(required)})",
                        where=str(path))
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise UserError(f"column(s) {', '.join(twice)} given twice in the header", where=str(path))
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"missing column(s) {', '.join(missing)}", where=str(path))
    records = []
    for number, cells in zip(starts[1:], lines[1:], strict=True):
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            raise UserError(f"{len(cells)} cells where the header has {len(header)}", where=f"{path}:{number}")
        records.append((number, dict(zip(header, cells, strict=True))))
    if not records:
        raise UserError(f"no rows, only a header ({what})", where=str(path))
    return header, records


def finite_number(text: str, column: str, where: str, low: float = 0.0, high: float = math.inf,
                  integer: bool = False, low_open: bool = False) -> float:
    """`text` as a finite number in [low, high] (or (low, high]), an integer if `integer`; else a
    `UserError` at `where` naming `column`."""
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{column} '{text}' is not a number", where=where) from None
    if not math.isfinite(value):
        raise UserError(f"{column} '{text}' is not a finite number", where=where)
    if not PLAIN_NUMBER.fullmatch(text.strip()):
        raise UserError(f"{column} '{text}' is not a number written in ASCII digits", where=where)
    if integer and not value.is_integer():
        raise UserError(f"{column} {text} is not a whole number", where=where)
    if value < low or (low_open and value == low) or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise UserError(f"{column} {text} is outside {interval}", where=where)
    return value


# Repeats of one scenario in one file (the shipped H200 files measure the lmhead rows twice) differ by
# noise: eager repeats up to 1.7x apart there. Further apart than this, the two rows contradict each other.
MAX_REPEAT_RATIO = 2.0


def measured_time(text: str, column: str, where: str, sep: str = " ") -> float:
    """`text` as a measured time in us, in [MIN_TIME_US, MAX_TIME_US] (`speedsim.limits`: at least a
    nanosecond, at most eleven days); else a `UserError` at `where` naming `column` (`column{sep}text`)."""
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{column}{sep}{text[:40]} is not a number", where=where) from None
    if math.isfinite(value) and not PLAIN_NUMBER.fullmatch(text.strip()):
        raise UserError(f"{column}{sep}{text[:40]} is not a number written in ASCII digits", where=where)
    problem = time_problem(value)
    if problem:
        raise UserError(f"{column}{sep}{text[:40]} {problem}", where=where)
    return value


def read_measured(path: Path, where: str | None = None) -> list[MeasuredRow]:
    """Read and check a measured CSV: a `UserError` naming the file (and row) for a missing or
    repeated column, a ragged row, an unknown section or mode, a size that is not a whole number
    in [0, its maximum] (`MAX_ROW_INTS`) or is 0 where the scenario needs one, a time (`us_median`,
    `us_min`, `us_max`, an `extra` time such as `host_us_per_step=`) that is not a measured time
    (`measured_time`; an empty `us_median`: not measured), a median outside the row's own min..max,
    a repeat of a scenario that contradicts an earlier row, or no rows."""
    path = Path(path)
    _, records = read_csv_table(path, "measured CSV", tuple(c for c in COLUMNS if c != "extra"), where)
    rows: list[MeasuredRow] = []
    seen: dict[tuple, MeasuredRow] = {}
    for line, rec in records:
        where = f"{path}:{line}"
        section = rec["section"].strip()
        if section not in KNOWN_SECTIONS:
            raise UserError(f"unknown section '{section}' (known: {', '.join(KNOWN_SECTIONS)})", where=where)
        mode = rec["mode"].strip()
        if mode not in ("", *MODES):
            raise UserError(f"unknown mode '{mode}' (graph, eager or empty)", where=where)
        ints = {k: int(finite_number(rec[k].strip() or "0", k, where, 0, high, integer=True))
                for k, high in MAX_ROW_INTS.items()}
        # an empty time: a row not measured (yet), listed by `validate` as skipped; any other text must be a time
        median = rec["us_median"].strip()
        us = measured_time(median, "us_median", where) if median else math.nan
        spread = [measured_time(rec[c].strip(), c, where) for c in ("us_min", "us_max") if rec[c].strip()]
        if len(spread) == 2 and math.isfinite(us) and not spread[0] <= us <= spread[1]:
            raise UserError(f"us_median {us:g} is outside the row's us_min..us_max {spread[0]:g}..{spread[1]:g}",
                            where=where)
        row = MeasuredRow(line=line, section=section, model=rec["model"].strip(), mode=mode,
                          pattern=rec["pattern"].strip(), us_median=us, extra=rec.get("extra", "") or "",
                          source=str(path), **ints)
        _check_extra(row, where)
        first = seen.setdefault((row.key, row.mode, row.extra.strip()), row)
        if first is not row and math.isfinite(us + first.us_median) \
                and max(us, first.us_median) > MAX_REPEAT_RATIO * min(us, first.us_median):
            raise UserError(f"this scenario's us_median {us:g} contradicts line {first.line}'s {first.us_median:g} "
                            f"(repeats more than {MAX_REPEAT_RATIO:g}x apart)", where=where)
        rows.append(row)
    return rows


def _identity(path: Path, where: str) -> Path:
    """The file `path` names, links resolved; a malformed path or an operating-system error (a link
    loop, a permission denied) is a `UserError` naming `where` and it (`speedsim.userpath`)."""
    label = f"{where} {shown(path)}"
    probe(path, label)
    try:
        return path.resolve()
    except (OSError, RuntimeError) as err:  # Python 3.11's resolve() raises RuntimeError on a link loop
        raise UserError(f"cannot use {label}: {err}", where=label) from None


def read_measured_files(paths: Sequence[Path], where: str = "--measured") -> list[MeasuredRow]:
    """The rows of several measured CSVs, fitted together, each file checked by `read_measured`; a
    `UserError` for a file given twice (its rows would count twice). Repeats of a scenario in two files
    are not held to `MAX_REPEAT_RATIO`: two runs differ by more (the H200 run and rerun: an eager group
    row 4x apart, a noisy first sample)."""
    given: dict[Path, Path] = {}
    for path in map(Path, paths):
        first = given.setdefault(_identity(path, where), path)
        if first is not path:
            also = "" if str(first) == str(path) else f" (also as {first})"
            raise UserError(f"{path} is given twice{also}: its rows would count twice", where=where)
    return [row for path in paths for row in read_measured(path, where)]



def _whole(text: str | None) -> int | None:
    """`text` as a whole number in ASCII digits, else None (`int()` also takes '+3' and '1_000';
    `str.isdigit()` also takes '²', which `int()` refuses)."""
    return int(text) if text and text.isascii() and text.isdigit() else None


# an `extra` key naming a time in microseconds: `us_per_step`, `host_us_per_step`, `prefill_us_per_seq`
EXTRA_TIME_KEY = re.compile(r"(?:^|_)us(?:_|$)")
# sections whose scenario is of n >= 1 tokens, rows or items (0 simulates nothing; a kernel profile's
# `lmhead_..._n0` divided by 0)
SIZED_SECTIONS = ("gemv", "layer", "lmhead", "op", "batch")


# what `extra`'s impl= names: speedsim's functional decoder timed by step (speedsim) or whole
# decodes (functional), or the static-buffer decoder of the closed-loop and batch rows (static)
IMPLS = ("speedsim", "functional", "static")


def _check_extra(row: MeasuredRow, where: str) -> None:
    """The `extra` column's `key=value` entries, given once each, and what the simulation reads from
    them and from the pattern: every time (`EXTRA_TIME_KEY`, a measured time), a batch row's
    `lengths=A/B/...` (n whole numbers in 1..MAX ctx, whose rounded mean is its ctx) and `cross=S`, a
    decode row's `tokens=` and `kv_bucket=`, an op row's shape, a ceiling pattern's size; and the
    sizes of the row's scenario (n >= 1 where it has n, a UxR that is a sharing)."""
    keys = [item.partition("=")[0].strip() for item in row.extra.split(";") if item.strip()]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"extra: {', '.join(twice)} given twice in '{row.extra}'", where=where)
    for key in keys:
        if EXTRA_TIME_KEY.search(key):
            measured_time(row.extra_field(key) or "", f"extra: {key}", where, sep="=")
    if row.section in SIZED_SECTIONS and row.n < 1:
        raise UserError(f"a {row.section} row needs n >= 1 (got {row.n}): a scenario of nothing", where=where)
    if row.section in ("group", "decode", "batch"):
        if row.L < 1 or row.R < 1:
            raise UserError(f"a {row.section} row needs L >= 1 and R >= 1 (got L={row.L}, R={row.R})",
                            where=where)
        Sharing.parse(f"{row.L}x{row.R}", where=where)  # R and the depth in range (the simulation builds it)
    if row.section == "decode":
        for key, top in (("tokens", MAX_DECODE_TOKENS), ("kv_bucket", MAX_ROW_INTS["ctx"])):
            text = row.extra_field(key)
            if text is not None and not (_whole(text) is not None and 1 <= int(text) <= top):
                raise UserError(f"extra: {key}={text} must be a whole number in 1..{top}", where=where)
    if row.section == "published":
        _check_published(row, where)
    impl = row.extra_field("impl")
    if impl is not None and impl not in IMPLS:  # a typo would silently simulate another implementation
        raise UserError(f"extra: impl={impl} is none of {', '.join(IMPLS)}", where=where)
    if row.section == "ceiling":
        m = CEILING_PATTERNS.fullmatch(row.pattern)
        if m is not None and m.group(1):
            size = int(m.group(1)) << (20 if m.group(2) == "MiB" else 30)
            if not 1 <= size <= MAX_COPY_BYTES:
                raise UserError(f"pattern {row.pattern}: copies are of 1 MiB to {MAX_COPY_BYTES >> 30} GiB",
                                where=where)
        elif m is not None and m.group(4) and not 1 <= int(m.group(4)) <= MAX_GEMM_N:
            raise UserError(f"pattern {row.pattern}: GEMMs are of size 1 to {MAX_GEMM_N}", where=where)
    if row.section == "gemv":
        m = GEMV_PATTERNS.fullmatch(row.pattern)
        if m is not None and m.group(1) and not all(1 <= int(x) <= MAX_OP_WIDTH for x in m.groups()):
            raise UserError(f"pattern {row.pattern}: a GEMV's features are 1 to {MAX_OP_WIDTH} each", where=where)
    if row.section == "op":
        _check_op(row, where)
    if row.section != "batch":
        return
    limit = MAX_ROW_INTS["ctx"]
    text = row.extra_field("lengths")
    if not text:
        raise UserError("a batch row needs lengths=A/B/... (one KV length per sequence) in its extra column",
                        where=where)
    try:
        lengths = [int(x) for x in text.split("/")]
    except ValueError:
        raise UserError(f"extra: lengths={text} is not whole numbers A/B/...", where=where) from None
    if len(lengths) != row.n or not all(1 <= n <= limit for n in lengths):
        raise UserError(f"extra: lengths={text} must be n={row.n} whole numbers in 1..{limit}", where=where)
    if row.ctx and abs(row.ctx - sum(lengths) / len(lengths)) > 1:
        raise UserError(f"ctx {row.ctx} contradicts the mean {sum(lengths) / len(lengths):g} of lengths={text}",
                        where=where)
    cross = row.extra_field("cross")
    if cross is not None and not (cross.isascii() and cross.isdigit() and int(cross) <= limit):  # not '²'
        raise UserError(f"extra: cross={cross} must be a whole number of encoder positions in 0..{limit}",
                        where=where)


# a published decode row: at most this many output tokens and layers (the simulation is one decode), its
# patterns, and the keys of its extra column (what is simulated: tp, the dtypes, prefill; what is recorded)
MAX_PUBLISHED_TOKENS, MAX_PUBLISHED_LAYERS = 4096, 1024
PUBLISHED_PATTERNS = ("unshared",)
PUBLISHED_KEYS = ("tp", "weight_dtype", "kv_dtype", "prefill", "source", "framework", "graphs", "gpu", "tok_s",
                  "model_as_published", "group")


def _check_published(row: MeasuredRow, where: str) -> None:
    """A published decode row (`published`): n output tokens (1..MAX_PUBLISHED_TOKENS) after a ctx-token prompt,
    L decoder layers (R = 1), and in `extra` the deployment (`tp=N`, default 1; `weight_dtype=`, `kv_dtype=`),
    whether the figure includes the prefill (`prefill=included|excluded`) and where it was published
    (`source=`)."""
    if row.pattern not in PUBLISHED_PATTERNS:
        raise UserError(f"unknown pattern '{row.pattern}' for section 'published' ({', '.join(PUBLISHED_PATTERNS)}: "
                        "a published decode of an unshared model)", where=where)
    keys = [item.partition("=") for item in row.extra.split(";") if item.strip()]
    for key, sep, _ in keys:
        if not sep or key.strip() not in PUBLISHED_KEYS:
            raise UserError(f"extra: '{key.strip()}' is not a key of a published row ({', '.join(PUBLISHED_KEYS)})",
                            where=where)
    if row.ctx < 1:
        raise UserError(f"a published row needs ctx >= 1 prompt tokens (got {row.ctx})", where=where)
    if not 1 <= row.n <= MAX_PUBLISHED_TOKENS:
        raise UserError(f"a published row needs n = 1..{MAX_PUBLISHED_TOKENS} output tokens (got {row.n})", where=where)
    if not 1 <= row.L <= MAX_PUBLISHED_LAYERS or row.R != 1:
        raise UserError(f"a published row needs L = 1..{MAX_PUBLISHED_LAYERS} layers and R = 1 (got L={row.L}, "
                        f"R={row.R})", where=where)
    tp = row.extra_field("tp")
    if tp is not None and not (_whole(tp) is not None and 1 <= int(tp) <= MAX_DEVICES):
        raise UserError(f"extra: tp={tp} must be a whole number of devices in 1..{MAX_DEVICES}", where=where)
    for key, known in (("weight_dtype", WEIGHT_DTYPES), ("kv_dtype", KV_DTYPES)):
        text = row.extra_field(key)
        if text is not None and text not in known:
            raise UserError(f"extra: {key}={text} is none of {', '.join(known)}", where=where)
    group = row.extra_field("group")
    if group is not None and not (_whole(group) is not None and 1 <= int(group) <= MAX_FFN
                                  and row.extra_field("weight_dtype") in ("int8", "int4")):
        raise UserError(f"extra: group={group} must be a whole number of input elements per scale in 1..{MAX_FFN}, "
                        "for int8 or int4 weights (weight_dtype=)", where=where)
    if row.extra_field("prefill") not in ("included", "excluded"):
        raise UserError("extra: a published row says whether its figure includes the prefill: prefill=included "
                        "or prefill=excluded", where=where)
    if not row.extra_field("source"):
        raise UserError("extra: a published row names where it was published: source=...", where=where)


def _check_op(row: MeasuredRow, where: str) -> None:
    """An op row's shape (section `op`, `speedsim.validation.measure.ops`): n >= 1 rows, items or tokens; a
    linear map's `in=K;out=N` in 1..MAX_OP_WIDTH; attention's ctx >= 1 keys and `queries=Q` >= 1 per item,
    n x Q query tokens in all at most a step's (MAX_ROW_INTS n)."""
    if row.n < 1:
        raise UserError(f"an op row needs n >= 1 (got {row.n})", where=where)
    if row.pattern == "linear":
        for key in ("in", "out"):
            text = row.extra_field(key)
            value = _whole(text)
            if value is None or not 1 <= value <= MAX_OP_WIDTH:
                got = f"{key}={text}" if text is not None else f"no {key}"
                raise UserError(f"extra: a linear op row needs in=K;out=N, whole numbers in 1..{MAX_OP_WIDTH} "
                                f"(got {got})", where=where)
    elif row.pattern == "attention":
        text = row.extra_field("queries")
        queries = _whole(text)
        top = MAX_ROW_INTS["n"]
        if queries is None or not 1 <= queries * row.n <= top:
            got = f"queries={text}" if text is not None else "no queries"
            raise UserError(f"extra: an attention op row needs queries=Q, a whole number >= 1 with n x Q <= {top} "
                            f"query tokens (got {got} at n={row.n})", where=where)
        if row.ctx < 1:
            raise UserError("an attention op row needs ctx >= 1 keys", where=where)


def rows_for_mode(rows: list[MeasuredRow], mode: str) -> list[tuple[MeasuredRow, Mode]]:
    """(row, simulated mode) pairs for `mode` in graph | eager | all.

    Mode-independent rows (empty mode: one large kernel where host overhead does not show) are
    simulated in graph mode and belong to every selection.
    """
    if mode not in ("graph", "eager", "all"):
        raise UserError(f"unknown mode '{mode}' (graph, eager or all)", where="--mode")
    out: list[tuple[MeasuredRow, Mode]] = []
    for row in rows:
        if row.mode == "":
            out.append((row, "graph"))
        elif row.mode in MODES and mode in ("all", row.mode):
            out.append((row, row.mode))
    return out
