"""Run a sweep: plan it (bad input fails before any run), skip finished runs, execute the rest
in a local process pool or on a Dask cluster, record each run as it finishes.

Runs are independent and deterministic (seeded synthetic traces, a deterministic engine), so
the order in which workers finish changes nothing in the table. An output directory holds the
runs of one spec: running a spec whose runs do not include every run already recorded there
(an edited spec) is refused, and so is resuming after an input changed: `inputs.json` records a
digest of each profile, trace and model spec the runs read. Local worker processes die with the
sweep, however it ends (`speedsim.procs`); an interrupted sweep (Ctrl-C) records every run that has finished,
then ends its workers at once rather than waiting for the runs they are simulating.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speedsim.errors import UserError
from speedsim.fileio import check_output, check_output_dir, write_bytes, write_text
from speedsim.procs import ProcessPool
from speedsim.sweep.execute import BATCH_MAX, batch_key, batchable, execute, execute_batch
from speedsim.sweep.spec import RunParams, SweepSpec, field_where, load_spec, model_spec_paths, plan
from speedsim.sweep.store import SPEC_COPY, ResultStore
from speedsim.userpath import one_line, os_errors, shown, user_path

Rows = list[dict[str, Any]]
WORKERS_PER_CORE = 4  # local worker processes per CPU core, at most
SCHEDULER_TIMEOUT_S = 10.0  # how long to try to reach a Dask scheduler before giving up


@dataclass
class SweepSummary:
    """What one invocation did (counts of runs) and where the table is."""

    name: str
    total: int
    skipped: int
    ran: int
    failed: int
    out: Path
    seconds: float
    bad_journal_lines: tuple[int, ...] = ()  # journal lines that were not valid records (dropped)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "runs": self.total, "skipped": self.skipped, "ran": self.ran,
                "failed": self.failed, "out": str(self.out), "seconds": round(self.seconds, 2),
                "bad_journal_lines": list(self.bad_journal_lines)}


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _cost_estimate(run: RunParams) -> float:
    """Rough relative cost of a run: layer passes x tokens x simulated methods (for ordering only)."""
    u, _, r = run.sharing.lower().partition("x")
    try:
        depth = int(u) * int(r)
    except ValueError:
        depth = 1
    tokens = (run.limit or 200) * 40 if run.trace else (run.out_len or 200) * (run.seqs or 40)
    return depth * tokens * (1 + len(run.baselines))


Record = Callable[[str, Rows], None]
RecordMany = Callable[[list[tuple[str, Rows]]], None]


PART_POINTS = 256  # a batch is split between workers only past this many runs per part: each part serves its
# programs through the residency once (seconds), which only pays where its points are many


def batches_of(todo: list[RunParams], parts: int = 1) -> tuple[list[list[RunParams]], list[RunParams]]:
    """`todo` split into batches of a hardware grid (`batchable` runs that differ only in their what-ifs, in
    `todo`'s order) and the runs that go one by one. Every batchable run goes into a batch, even alone, so its
    rows come from one path whatever else a sweep (or its resumption) runs. A batch holds at most `BATCH_MAX`
    runs, and a large one is cut in up to `parts` (the workers) of at least `PART_POINTS` runs each, so one
    grid keeps every worker busy; a batch's rows do not depend on which runs share it."""
    groups: dict[str, list[RunParams]] = {}
    single = []
    for run in todo:
        if batchable(run):
            groups.setdefault(batch_key(run), []).append(run)
        else:
            single.append(run)
    out = []
    for runs in groups.values():
        k = max(1, min(parts, -(-len(runs) // PART_POINTS)))
        size = min(BATCH_MAX, -(-len(runs) // k))
        out += list(_chunks(runs, size))
    return out, single


def execute_runs(batch: list[dict[str, Any]], model_specs: tuple[str, ...], base_dir: str) -> list[Rows]:
    """One task of a sweep: a batch of a hardware grid (`execute_batch`), or runs one by one (`execute`)."""
    runs = [RunParams.model_validate(p) for p in batch]
    if len(runs) > 0 and all(batchable(r) for r in runs) and len({batch_key(r) for r in runs}) == 1:
        return execute_batch(batch, model_specs, base_dir)
    return [execute(p, model_specs, base_dir) for p in batch]


def _local(tasks: list[list[RunParams]], args: tuple, workers: int, record_many: RecordMany) -> None:
    """Run `tasks` (each a batch of a hardware grid or a single run: `execute_runs`) in this process (`workers`
    1) or in worker processes, and record each task's runs as soon as it finishes. When the sweep stops early
    (an interrupt, a bug in a run), every task that has finished is recorded, then the queued ones are
    cancelled and the workers ended at once: the runs they were simulating are lost (and run on resume), but
    nothing that finished is. Workers ignore Ctrl-C (it is the sweep's to answer: a worker that took it would
    report it as its run's result) and die with the sweep however it ends (`speedsim.procs.init_worker`)."""

    def items(task: list[RunParams], rows: list[Rows]) -> list[tuple[str, Rows]]:
        return [(r.key, out) for r, out in zip(task, rows, strict=True)]

    if workers <= 1:
        for task in tasks:
            record_many(items(task, execute_runs([r.model_dump() for r in task], *args)))
        return
    pool = ProcessPool(workers)
    pending: dict[Future, list[RunParams]] = {}
    try:
        for task in tasks:
            pending[pool.submit(execute_runs, [r.model_dump() for r in task], *args)] = task
        for fut in as_completed(pending):
            rows = fut.result()
            # out of `pending` before it is recorded: an interrupt during the recording (which writes the
            # journal lines first) must not record it twice
            record_many(items(pending.pop(fut), rows))
    except BaseException:
        try:
            for fut, task in list(pending.items()):
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    record_many(items(task, fut.result()))
        finally:
            pool.end_now()  # not after the runs the workers are simulating
        raise
    pool.shutdown()


def run_sweep(spec: SweepSpec | Path | str, out: Path | str, workers: int = 2, scheduler: str | None = None,
              progress: bool = True, chunk: int | None = None, on_run: Record | None = None,
              out_flag: str = "--out", spec_where: str | None = None) -> SweepSummary:
    """Run every unfinished run of `spec` into `out` (see `ResultStore`); return what was done.

    `workers`: local processes (1 = in this process); `scheduler`: address of a running Dask
    scheduler (then `workers` is ignored); `chunk`: runs per Dask task (default: about 4 tasks per
    worker, at most 8 runs each; a local worker takes one run at a time); `on_run(key, rows)` is
    called after each run is recorded. Messages about `out` name `out_flag`, the flag the user gave
    it with (`speedsim report` sweeps into subdirectories of `--cache`), and messages about the spec
    name `spec_where` (default: the spec's file, or its name for a spec given as a `SweepSpec`).
    """
    t0 = time.monotonic()
    check_workers(workers)
    check_output_dir(out, out_flag)  # before the spec is planned, so a bad --out is named whatever the spec
    if scheduler is not None:
        check_scheduler(scheduler)  # a malformed (or empty) address fails before anything runs
    if not isinstance(spec, SweepSpec):
        spec_path = user_path(spec, shown(spec) or "SPEC_FILE")  # '' is no path (Path would read it as '.')
        spec = load_spec(spec_path)
    else:
        spec_path = None
    where = spec_where or str(spec_path or spec.name)
    runs = plan(spec, where=where)  # raises UserError before anything runs
    out = Path(out)
    failed = ran = 0
    with contextlib.ExitStack() as stack:
        # connect before anything is written: an unreachable scheduler leaves no output directory behind
        client = stack.enter_context(_dask_client(scheduler)) if scheduler is not None else None
        store = stack.enter_context(ResultStore(out, where=out_flag))
        _check_same_spec(store, runs, out, out_flag)
        _check_same_inputs(out, input_digests(spec, runs, where), resuming=bool(store.keys()),
                           out_flag=out_flag)
        if spec_path is not None:
            with os_errors(where):
                data = spec_path.read_bytes()
            write_bytes(out / SPEC_COPY, data, where=out_flag)
        done = store.finished()
        # longest runs first, so no worker is left with a long run at the end (results do not depend on order)
        todo = sorted((r for r in runs if r.key not in done), key=_cost_estimate, reverse=True)
        skipped = len(runs) - len(todo)
        args = (tuple(str(Path(spec.base_dir or ".") / p) for p in spec.model_specs), spec.base_dir)
        bar = stack.enter_context(tqdm(total=len(runs), initial=skipped, desc=spec.name, unit="run",
                                       disable=not progress, dynamic_ncols=True, mininterval=0.5))

        def record_many(items: list[tuple[str, Rows]]) -> None:
            nonlocal ran, failed
            store.add_many(items)
            for key, rows in items:
                ran += 1
                failed += rows[0].get("status") != "ok"
                if on_run is not None:
                    on_run(key, rows)
            bar.update(len(items))
            if failed:
                bar.set_postfix(failed=failed)

        if client is not None:
            batches, single = batches_of(todo, _dask_workers(client))
            if chunk is None:
                chunk = max(1, min(8, len(single) // (4 * max(workers, 1)) or 1))
            _dask(single, batches, args, client, chunk, record_many, scheduler or "")
        else:
            batches, single = batches_of(todo, workers)
            _local([*batches, *([run] for run in single)], args, workers, record_many)
    return SweepSummary(spec.name, len(runs), skipped, ran, failed, out, time.monotonic() - t0,
                        tuple(store.bad_lines))


def check_workers(workers: int) -> int:
    """A number of local worker processes this machine can run: 1 to `WORKERS_PER_CORE` per core
    (more only thrash, and a huge number would fail deep in the process pool)."""
    most = WORKERS_PER_CORE * (os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= most:
        raise UserError(f"{workers} is not between 1 and {most} ({WORKERS_PER_CORE} per core of this machine)",
                        where="--workers")
    return workers


def _check_same_spec(store: ResultStore, runs: list[RunParams], out: Path, out_flag: str = "--out") -> None:
    """Refuse to mix: every run already recorded in `out` must be a run of this spec."""
    foreign = store.keys() - {r.key for r in runs}
    if foreign:
        raise UserError(f"{out} holds {len(foreign)} run(s) of a different spec (the spec was edited?); "
                        f"use a new {out_flag} directory, or delete this one to start over", where=out_flag)


INPUTS_FILE = "inputs.json"


def input_digests(spec: SweepSpec, runs: list[RunParams], where: str = "spec") -> dict[str, str]:
    """A digest of every input the runs read beside their parameters: each profile's content (a name
    or a path), each trace and fitted-to trace file, each model spec file. A run's key hashes its
    parameters only, so this is what tells a resumed sweep that a profile was recalibrated since.
    A file that cannot be read (the runs were planned, so it changed since) is a `UserError` naming the
    spec at `where` and the field that names the file."""
    from speedsim.engine import open_profile
    from speedsim.trace.io import resolve_trace

    digests: dict[str, str] = {}
    for run in runs:
        if f"profile:{run.profile}" not in digests:
            with os_errors(field_where(where, "profile")):
                profile = open_profile(run.profile)
            digests[f"profile:{run.profile}"] = _digest(profile.model_dump_json().encode())
        for kind, name in (("trace", run.trace), ("fit", run.fit)):
            if name is not None and f"{kind}:{name}" not in digests:
                with os_errors(field_where(where, kind)):
                    digests[f"{kind}:{name}"] = _digest(resolve_trace(name, spec.base_dir).read_bytes())
        kind, _, name = (run.arrivals or "").partition(":")
        if kind == "trace" and f"arrivals:{name}" not in digests:  # a serving run's arrival times
            with os_errors(field_where(where, "arrivals")):
                digests[f"arrivals:{name}"] = _digest((Path(spec.base_dir or ".") / name).read_bytes())
    for name, path in zip(spec.model_specs, model_spec_paths(spec, where), strict=True):
        with os_errors(field_where(where, "model_specs")):
            digests[f"model_spec:{name}"] = _digest(path.read_bytes())
    return dict(sorted(digests.items()))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _check_same_inputs(out: Path, digests: dict[str, str], resuming: bool, out_flag: str = "--out") -> None:
    """Refuse to resume results simulated from other inputs (a profile, trace or model spec that has
    changed since); record the inputs of these results (`inputs.json`) otherwise."""
    path = check_output(out / INPUTS_FILE, out_flag)  # a FIFO there would block the read below
    if resuming and path.exists():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError):
            before = None
        if not isinstance(before, dict):
            raise UserError(f"{path} is unreadable: cannot tell what these results were simulated from; use "
                            f"a new {out_flag} directory, or delete this one to start over", where=out_flag)
        changed = sorted(k for k, v in digests.items() if k in before and before[k] != v)
        if changed:
            raise UserError(f"{out} holds results simulated from other inputs: {', '.join(changed)} changed "
                            f"since; use a new {out_flag} directory, or delete this one to start over",
                            where=out_flag)
        digests = {**before, **digests}
    write_text(path, json.dumps(digests, indent=1) + "\n", where=out_flag)


# Transports speedsim reaches a Dask scheduler over: the ones Dask connects over with no credentials and
# no optional package, and inproc:// (a scheduler inside this very process: a library caller's LocalCluster).
# tls:// and wss:// need TLS credentials (speedsim takes none), ucx:// needs ucx-py.
SCHEMES = ("tcp", "ws")
_ADDRESS = re.compile(r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://)?(?P<host>\[[^\]]*\]|[^:/\[\]]*)"
                      r"(?::(?P<port>[^/]*))?/?")
_INPROC = re.compile(r"inproc://[!-~]+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
_EXAMPLE = "e.g. tcp://host:8786"


def check_scheduler(address: str) -> str:
    """A Dask scheduler address speedsim can connect to, `[tcp://|ws://]HOST:PORT`: HOST a host name
    (ASCII letters, digits, hyphens and dots), an IPv4 address or a bracketed IPv6 address, PORT in
    1..65535 (or `inproc://...`, a scheduler in this process). Any other address (another scheme, no
    host, no port) is a `UserError` naming --scheduler, before anything runs; whether a scheduler
    answers there is `_dask_client`'s to find out."""
    where = "--scheduler"
    if _INPROC.fullmatch(address):
        return address
    m = _ADDRESS.fullmatch(address)
    if not m:
        raise UserError(f"'{shown(address)}' is not a scheduler address ({_EXAMPLE})", where=where)
    scheme, host, port = (m.group("scheme") or "tcp").lower(), m.group("host"), m.group("port")
    if scheme not in SCHEMES:
        supported = " or ".join(s + "://" for s in SCHEMES)
        raise UserError(f"'{shown(address)}': {shown(scheme)}:// is not supported; speedsim reaches a Dask "
                        f"scheduler over {supported} (no TLS credentials, no UCX; {_EXAMPLE})", where=where)
    if not host:
        raise UserError(f"'{shown(address)}' names no host ({_EXAMPLE})", where=where)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UserError(f"'{shown(address)}': {shown(host)} is not an IPv6 address",
                            where=where) from None
    elif not _HOSTNAME.fullmatch(host):
        raise UserError(f"'{shown(address)}': '{shown(host)}' is not a host name or IP address", where=where)
    if port is None or not port.isascii() or not port.isdigit():
        raise UserError(f"'{shown(address)}' names no port number ({_EXAMPLE})", where=where)
    if not 1 <= int(port) <= 65535:
        raise UserError(f"'{shown(address)}': port {int(port)} is not in 1..65535", where=where)
    return address


@contextlib.contextmanager
def _dask_client(scheduler: str) -> Iterator[Any]:
    """A client of the Dask scheduler at `scheduler`; a `UserError` naming --scheduler if it cannot be
    reached in `SCHEDULER_TIMEOUT_S`. Whatever the client raises while it connects (refused, timed out,
    a name that does not resolve, a peer that does not speak Dask) is a failure to reach the scheduler,
    never a bug of the sweep's: nothing of the sweep runs before it is connected."""
    from distributed import Client  # here, not at the top: importing Dask takes a second

    address = check_scheduler(scheduler)
    try:
        client = Client(address, timeout=f"{SCHEDULER_TIMEOUT_S}s")
    except Exception as err:  # noqa: BLE001 - see the docstring: any failure to connect is the address's
        raise UserError(f"cannot reach the Dask scheduler at {shown(scheduler)}: {_one_line(err)}",
                        where="--scheduler") from None
    try:
        yield client
    finally:
        client.close()


def _one_line(err: BaseException) -> str:
    """`err` as one line of a message: its text with runs of white space as one space and any other
    character that is not printable escaped (`speedsim.userpath.one_line`), or its type."""
    return one_line(" ".join(str(err).split())) or type(err).__name__


def _dask_workers(client: Any) -> int:
    """How many workers the Dask cluster has now (1 if it cannot tell)."""
    try:
        return max(1, len(client.scheduler_info().get("workers", {})))
    except Exception:  # noqa: BLE001 - only a hint for cutting batches
        return 1


def _dask(todo: list[RunParams], grids: list[list[RunParams]], args: tuple, client: Any, chunk: int,
          record_many: RecordMany, scheduler: str = "") -> None:
    """Submit batches of `chunk` runs of `todo`, and each batch of a hardware grid in `grids` (`execute_batch`),
    to a Dask cluster; record each batch's runs as it completes. Losing the scheduler (or its workers) part
    way is a `UserError` naming --scheduler; the runs recorded so far stay (a run's own bug still propagates:
    `execute` raises it as `RunFailed`, not as these)."""
    from distributed import as_completed

    futures = []
    batches = {}
    try:
        for batch in [*grids, *_chunks(todo, chunk)]:
            fut = client.submit(execute_runs, [r.model_dump() for r in batch], *args, pure=False)
            futures.append(fut)
            batches[fut.key] = batch
        for fut in as_completed(futures):
            try:
                results = fut.result()
            except (OSError, CancelledError) as err:  # the connection, not a run (see above)
                raise UserError(f"lost the Dask scheduler at {shown(scheduler)} part way: {_one_line(err)}; "
                                "the runs that finished are recorded, run the sweep again to resume",
                                where="--scheduler") from None
            record_many([(run.key, rows) for run, rows in zip(batches[fut.key], results, strict=True)])
    finally:
        with contextlib.suppress(Exception):  # a scheduler that is gone has nothing to cancel
            client.cancel(futures)
