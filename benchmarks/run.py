"""Side-by-side benchmarks: manycore against a plain loop and its peers, in one run.

Every workload runs on every runner in the same process, one runner after the
other, with the same number of workers (``manycore.usable_cpus()`` unless
``--workers`` says otherwise):

    (a) 1,000,000 x ``x*x``               (b) 2,000 x ~1 ms of pure-Python work
    (c) 4 x ~0.5 s of pure-Python work    (d) 64 NumPy arrays of 8 MB -> ``a.sum()``
    (e) one ``submit(f, x).result()`` round trip, against a raw ``multiprocessing.Pipe``
    (f) cold start: pool creation to the first result (shutdown reported apart)

Runners: the sequential loop, ``mc.map``, ``mc.Pool``, ``multiprocessing.Pool``,
``concurrent.futures.ProcessPoolExecutor``, joblib (loky) and mpire; a peer that is
not installed is skipped with a note. For (a)-(e) the pools are built and warmed up
outside the timed region. The machine this runs on is usually shared and noisy, so
the report compares ratios taken from the same run.

    python benchmarks/run.py                     # full run, writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick --only a,e  # smoke run, stdout only
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import multiprocessing
import operator
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import manycore as mc

try:
    import numpy as np
except ImportError:  # (d) is skipped without NumPy
    np = None

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
ALL_WORKLOADS = "abcdef"
# multiprocessing and ProcessPoolExecutor fork their workers where fork is the default.
FORK_IS_DEFAULT = multiprocessing.get_all_start_methods()[0] == "fork"


# --------------------------------------------------------------------- work functions


def square(x: int) -> int:
    return x * x


def noop(x: Any) -> Any:
    return x


def spin(n: int) -> int:
    """Pure-Python CPU work that holds the GIL; ``n`` loops (calibrated at start)."""
    acc = 0
    for i in range(n):
        acc += i * i % 7
    return acc


def array_sum(a: Any) -> Any:
    return a.sum()


def calibrate_spin(seconds: float) -> int:
    """Loops of ``spin`` that take about ``seconds`` on this machine (best of 5)."""
    probe = 200_000
    best = min(_timed(spin, probe) for _ in range(5))
    return max(1, round(probe * seconds / best))


def _timed(fn: Callable[[int], Any], arg: int) -> float:
    started = time.perf_counter()
    fn(arg)
    return time.perf_counter() - started


def _echo(conn: Any) -> None:
    """Child of the raw-pipe reference: send back what arrives until ``None``."""
    while (message := conn.recv()) is not None:
        conn.send(message)


# --------------------------------------------------------------------------- runners


def mp_chunksize(n: int, workers: int) -> int:
    """The chunksize ``multiprocessing.Pool.map`` picks: about 4 chunks per worker."""
    chunksize, extra = divmod(n, workers * 4)
    return max(1, chunksize + bool(extra))


class Runner:
    """One way to run work. ``open`` builds the pool; ``close`` always follows it."""

    name = ""
    requires: str | None = None  # an optional peer package: skipped if missing
    parallel = True
    forks = False  # its workers are forked from this process (the Linux default)
    call_label = ""  # how (e) and (f) run one task
    settings = ""

    def __init__(self, workers: int):
        self.workers = workers

    def open(self) -> None:
        pass

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def call(self, fn: Callable[[Any], Any], x: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Sequential(Runner):
    name = "sequential loop"
    parallel = False
    settings = "`list(map(f, items))` in the parent process (no pool)."

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return list(map(fn, items))


class ManycoreMap(Runner):
    name = "manycore mc.map"
    call_label = "`mc.map(f, [x])[0]` (one-item map)"
    settings = (
        "`mc.map(f, items, workers=N)`; defaults: adaptive chunking, `spawn` start method, "
        "warm default pool (built by the warm-up call), `mc.shutdown_default_pools()` to close."
    )

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return mc.map(fn, items, workers=self.workers)

    def call(self, fn: Callable[[Any], Any], x: Any) -> Any:
        return mc.map(fn, [x], workers=self.workers)[0]

    def close(self) -> None:
        mc.shutdown_default_pools()


class ManycorePool(Runner):
    name = "manycore Pool"
    call_label = "`pool.submit(f, x).result()`"
    settings = "`mc.Pool(workers=N)`: `pool.map(f, items)` (adaptive chunking), `spawn`."

    def open(self) -> None:
        self.pool = mc.Pool(workers=self.workers)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return self.pool.map(fn, items)

    def call(self, fn: Callable[[Any], Any], x: Any) -> Any:
        return self.pool.submit(fn, x).result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class MultiprocessingPool(Runner):
    name = "multiprocessing.Pool"
    call_label = "`pool.apply_async(f, (x,)).get()`"
    forks = FORK_IS_DEFAULT
    settings = (
        "`multiprocessing.Pool(N)` with the platform default start method; `pool.map(f, items)` "
        "with its default chunksize (about 4 chunks per worker); `close()` + `join()`."
    )

    def open(self) -> None:
        self.pool = multiprocessing.Pool(self.workers)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return self.pool.map(fn, items)

    def call(self, fn: Callable[[Any], Any], x: Any) -> Any:
        return self.pool.apply_async(fn, (x,)).get()

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class FuturesPool(Runner):
    name = "ProcessPoolExecutor"
    call_label = "`executor.submit(f, x).result()`"
    forks = FORK_IS_DEFAULT
    settings = (
        "`ProcessPoolExecutor(max_workers=N)`, platform default start method; "
        "`list(executor.map(f, items, chunksize=c))` with c computed as multiprocessing.Pool "
        "does (ceil(len / (4 N))); `shutdown(wait=True)`."
    )

    def open(self) -> None:
        self.executor = ProcessPoolExecutor(max_workers=self.workers)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        chunksize = mp_chunksize(len(items), self.workers)
        return list(self.executor.map(fn, items, chunksize=chunksize))

    def call(self, fn: Callable[[Any], Any], x: Any) -> Any:
        return self.executor.submit(fn, x).result()

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class Joblib(Runner):
    name = "joblib (loky)"
    requires = "joblib"
    call_label = "`parallel([delayed(f)(x)])[0]` (one-item Parallel call)"
    settings = (
        "`Parallel(n_jobs=N)` (loky backend, `batch_size='auto'`, arrays over 1 MB memory-mapped) "
        "kept open as a context manager across calls; `parallel(delayed(f)(x) for x in items)`; "
        "closed by shutting down loky's reusable executor."
    )

    def open(self) -> None:
        from joblib import Parallel

        self.parallel = Parallel(n_jobs=self.workers)
        self.parallel.__enter__()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        from joblib import delayed

        return list(self.parallel(delayed(fn)(x) for x in items))

    def call(self, fn: Callable[[Any], Any], x: Any) -> Any:
        from joblib import delayed

        return self.parallel([delayed(fn)(x)])[0]

    def close(self) -> None:
        from joblib.externals.loky import reusable_executor

        try:
            self.parallel.__exit__(None, None, None)
        finally:
            executor = reusable_executor._executor  # loky's one shared executor
            if executor is not None:
                executor.shutdown(wait=True)


class Mpire(Runner):
    name = "mpire"
    requires = "mpire"
    call_label = "`pool.apply_async(f, (x,)).get()`"
    forks = True  # mpire's default start method
    settings = (
        "`WorkerPool(n_jobs=N, keep_alive=True)` (default `fork`; keep_alive so the workers stay "
        "up between calls); `pool.map(f, items)` with its default chunking (4 chunks per "
        "worker); `stop_and_join()`."
    )

    def open(self) -> None:
        from mpire import WorkerPool

        self.pool = WorkerPool(n_jobs=self.workers, keep_alive=True)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return list(self.pool.map(fn, items))

    def call(self, fn: Callable[[Any], Any], x: Any) -> Any:
        return self.pool.apply_async(fn, (x,)).get()

    def close(self) -> None:
        try:
            self.pool.stop_and_join()
        finally:
            self.pool.terminate()


RUNNERS: list[type[Runner]] = [
    Sequential,
    ManycoreMap,
    ManycorePool,
    MultiprocessingPool,
    FuturesPool,
    Joblib,
    Mpire,
]
MANYCORE_REF = ManycoreMap.name  # the "vs manycore" column of (a)-(d)


def installed(runner: type[Runner]) -> bool:
    if runner.requires is None:
        return True
    try:
        importlib.metadata.version(runner.requires)
        __import__(runner.requires)
    except ImportError:
        return False
    return True


@contextmanager
def opened(runner: Runner) -> Iterator[Runner]:
    runner.open()
    try:
        yield runner
    finally:
        runner.close()


# ------------------------------------------------------------------------ measuring


@dataclass
class Row:
    """One runner's measurements in one workload: seconds, or a note why there are none."""

    name: str
    times: list[float] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)  # (e): p90, raw pipe; (f): shutdowns
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.note else None


@dataclass
class Workload:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    def get(self, name: str) -> float | None:
        row = self.row(name)
        return row.median if row else None


def same(got: Sequence[Any], expected: Sequence[Any]) -> bool:
    return len(got) == len(expected) and all(g == e for g, e in zip(got, expected, strict=True))


def open_all(
    stack: ExitStack, workers: int, warm_up: Callable[[Runner], Any], rows: dict[str, Row]
) -> list[Runner]:
    """Open and warm up every installed runner at once; the stack closes them all.

    Runners whose workers are forked go first: a child forked later would inherit
    copies of manycore's pipes (see the README). A runner that fails gets a note.
    """
    live = []
    for runner_cls in sorted(RUNNERS, key=lambda cls: not cls.forks):
        row = rows[runner_cls.name]
        if not installed(runner_cls):
            row.note = f"skipped: {runner_cls.requires} is not installed"
            continue
        try:
            runner = stack.enter_context(opened(runner_cls(workers)))
            warm_up(runner)
        except Exception as exc:
            row.note = f"ERROR: {type(exc).__name__}: {exc}"
            continue
        live.append(runner)
    order = [cls.name for cls in RUNNERS]
    return sorted(live, key=lambda runner: order.index(runner.name))


def time_once(
    runner: Runner,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    expected: Sequence[Any],
    row: Row,
) -> None:
    """One timed, verified map; a wrong result or an error becomes the row's note."""
    try:
        started = time.perf_counter()
        result = runner.map(fn, items)
        row.times.append(time.perf_counter() - started)
    except Exception as exc:
        row.note = f"ERROR: {type(exc).__name__}: {exc}"
        return
    if not same(result, expected):
        row.note = "WRONG RESULT (differs from the sequential loop)"


def bench_map(
    key: str, title: str, fn: Callable[[Any], Any], items: Sequence[Any], workers: int, repeat: int
) -> Workload:
    """Every runner's warm pool is open at once and the repeats go round-robin, so a
    burst of load from elsewhere on the machine falls on all runners alike."""
    rows = {cls.name: Row(cls.name) for cls in RUNNERS}
    expected = list(map(fn, items))
    with ExitStack() as stack:
        print(f"  ({key}) opening and warming up the runners ...", file=sys.stderr, flush=True)
        live = open_all(stack, workers, lambda r: r.map(fn, items[: 2 * workers]), rows)
        for i in range(repeat):
            print(f"  ({key}) round {i + 1} of {repeat} ...", file=sys.stderr, flush=True)
            for runner in live:
                if not rows[runner.name].note:
                    time_once(runner, fn, items, expected, rows[runner.name])
    return Workload(key, title, [rows[cls.name] for cls in RUNNERS])


def run_guarded(runner_cls: type[Runner], workers: int, measure: Callable[[Runner], Row]) -> Row:
    """Open the runner, measure, always close it; a missing peer or an error is a note."""
    if not installed(runner_cls):
        return Row(runner_cls.name, note=f"skipped: {runner_cls.requires} is not installed")
    try:
        with opened(runner_cls(workers)) as runner:
            return measure(runner)
    except Exception as exc:
        return Row(runner_cls.name, note=f"ERROR: {type(exc).__name__}: {exc}")


def timed_calls(call: Callable[[int], Any], xs: range) -> tuple[list[float], bool]:
    """Seconds of each ``call(x)``, and whether every call gave ``x`` back."""
    times, ok = [], True
    for x in xs:
        started = time.perf_counter()
        result = call(x % 97)
        times.append(time.perf_counter() - started)
        ok = ok and result == x % 97
    return times, ok


def round_trips(call: Callable[[int], Any], count: int) -> tuple[list[float], bool]:
    """``count`` timed round trips of ``call`` after ``count // 10`` warm-up ones."""
    timed_calls(call, range(max(10, count // 10)))
    return timed_calls(call, range(count))


RAW_PIPE = "raw multiprocessing.Pipe"


class PipeEcho:
    """The reference of (e): the parent and one child echoing over ``multiprocessing.Pipe``."""

    def __enter__(self) -> PipeEcho:
        self.conn, child = multiprocessing.Pipe()
        self.proc = multiprocessing.Process(target=_echo, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        return self

    def ping(self, x: int) -> Any:
        self.conn.send(x)
        return self.conn.recv()

    def __exit__(self, *exc_info: object) -> None:
        with suppress(OSError):
            self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


IMPORTABLE = "manycore Pool, importable f"


def latency_cases() -> list[tuple[type[Runner], Callable[[Any], Any], str]]:
    """(runner, task function, row name) for (e): each parallel runner with ``noop``,
    and manycore's Pool once more with ``operator.pos``, a function that is not in
    ``__main__`` (manycore pickles a ``__main__`` function again on every submit)."""
    cases = [(cls, noop, cls.name) for cls in RUNNERS if cls.parallel]
    cases.insert(2, (ManycorePool, operator.pos, IMPORTABLE))
    return cases


def bench_latency(workers: int, count: int) -> Workload:
    """Each runner's round trips, right after as many raw-pipe ones (its reference).

    The reference is measured next to each runner, so that their ratio holds when the
    machine's load drifts, but before the runner's pool exists, so that the pool's
    threads cannot slow the reference down.
    """
    workload = Workload("e", f"round trip of one trivial task (median of {count}, after warm-up)")
    all_raw: list[float] = []

    def measure(runner: Runner, fn: Callable[[Any], Any], name: str, raw: list[float]) -> Row:
        runner.call(fn, 0)  # the pool is up before the warm-up round trips start
        times, ok = round_trips(lambda x: runner.call(fn, x), count)
        p90 = statistics.quantiles(times, n=10)[-1]
        row = Row(name, [statistics.median(times)], [p90, statistics.median(raw)])
        row.note = "" if ok else "WRONG RESULT"
        return row

    with PipeEcho() as echo:
        for runner_cls, fn, name in latency_cases():
            print(f"  (e) {name} ...", file=sys.stderr, flush=True)
            raw, _ = round_trips(echo.ping, count)
            all_raw += raw
            row = run_guarded(runner_cls, workers, lambda r, a=(fn, name, raw): measure(r, *a))
            row.name = name
            workload.rows.append(row)
    p90 = statistics.quantiles(all_raw, n=10)[-1]
    raw_row = Row(RAW_PIPE, [statistics.median(all_raw)], [p90, statistics.median(all_raw)])
    workload.rows.insert(0, raw_row)
    return workload


def cold_start(runner_cls: type[Runner], workers: int) -> tuple[float, float]:
    """Seconds from building the pool to the first result, and to shut it down."""
    runner = runner_cls(workers)
    started = time.perf_counter()
    runner.open()
    try:
        if runner.call(noop, 7) != 7:
            raise RuntimeError("wrong result from the first task")
        first = time.perf_counter()
    finally:
        closing = time.perf_counter()
        runner.close()
    return first - started, time.perf_counter() - closing


def bench_cold(workers: int, repeat: int) -> Workload:
    workload = Workload("f", f"cold start: pool creation to first result (median of {repeat})")
    for runner_cls in RUNNERS:
        if not runner_cls.parallel:
            continue
        print(f"  (f) {runner_cls.name} ...", file=sys.stderr, flush=True)
        if not installed(runner_cls):
            workload.rows.append(
                Row(runner_cls.name, note=f"skipped: {runner_cls.requires} is not installed")
            )
            continue
        row = Row(runner_cls.name)
        try:
            for _ in range(repeat):
                first, shutdown = cold_start(runner_cls, workers)
                row.times.append(first)
                row.extra.append(shutdown)
        except Exception as exc:
            row.note = f"ERROR: {type(exc).__name__}: {exc}"
        workload.rows.append(row)
    return workload


# ------------------------------------------------------------------------ reporting


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if value is not None and reference else "-"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def efficiency(sequential: float | None, parallel: float | None, workers: int) -> float | None:
    """Parallel efficiency: sequential time / (workers x parallel time)."""
    return sequential / (workers * parallel) if sequential and parallel else None


def map_table(w: Workload, workers: int, with_efficiency: bool) -> list[str]:
    seq, ref = w.get(Sequential.name), w.get(MANYCORE_REF)
    header = ["runner", "median", "min - max", "x sequential", "x mc.map"]
    header += ["parallel efficiency"] if with_efficiency else []
    rows = []
    for r in w.rows:
        if r.median is None:
            rows.append([r.name, r.note] + ["-"] * (len(header) - 2))
            continue
        cells = [
            r.name,
            fmt_time(r.median),
            f"{fmt_time(min(r.times))} - {fmt_time(max(r.times))}",
            fmt_ratio(r.median, seq),
            fmt_ratio(r.median, ref),
        ]
        if with_efficiency:
            eff = efficiency(seq, r.median, workers) if r.name != Sequential.name else None
            cells.append(f"{eff:.1%}" if eff is not None else "-")
        rows.append(cells)
    return markdown_table(header, rows)


def latency_table(w: Workload) -> list[str]:
    ref = w.get(ManycorePool.name)
    how = {cls.name: cls.call_label for cls in RUNNERS}
    how[RAW_PIPE] = "`conn.send(x); conn.recv()`, a child echoing (all runs pooled)"
    how[IMPORTABLE] = "`pool.submit(operator.pos, x).result()`"
    header = [
        "runner",
        "one round trip",
        "median",
        "p90",
        "raw Pipe just before",
        "x raw Pipe",
        "x manycore Pool",
    ]
    rows = []
    for r in w.rows:
        if r.median is None:
            rows.append([r.name, how.get(r.name, ""), r.note, "-", "-", "-", "-"])
            continue
        p90, raw = r.extra
        rows.append(
            [
                r.name,
                how.get(r.name, ""),
                fmt_time(r.median),
                fmt_time(p90),
                fmt_time(raw),
                fmt_ratio(r.median, raw),
                fmt_ratio(r.median, ref),
            ]
        )
    return markdown_table(header, rows)


def cold_table(w: Workload) -> list[str]:
    ref = w.get(ManycorePool.name)
    header = [
        "runner",
        "first result (median)",
        "min - max",
        "shutdown (median)",
        "x manycore Pool",
    ]
    rows = []
    for r in w.rows:
        if r.median is None:
            rows.append([r.name, r.note, "-", "-", "-"])
            continue
        rows.append(
            [
                r.name,
                fmt_time(r.median),
                f"{fmt_time(min(r.times))} - {fmt_time(max(r.times))}",
                fmt_time(statistics.median(r.extra)),
                fmt_ratio(r.median, ref),
            ]
        )
    return markdown_table(header, rows)


@dataclass
class Target:
    label: str
    runner: str
    rule: str
    passed: bool | None  # None: reported only, or not measured
    detail: str


def speed_targets(w: Workload, workers: int) -> list[Target]:
    """(a) no slower than the loop and 2x faster than multiprocessing.Pool; (b)/(c) efficiency."""
    seq, targets = w.get(Sequential.name), []
    for name in (ManycoreMap.name, ManycorePool.name):
        t = w.get(name)
        if w.key == "a":
            mp_t = w.get(MultiprocessingPool.name)
            rule = "≤ sequential and ≥ 2x faster than multiprocessing.Pool"
            ok = None if None in (t, seq, mp_t) else t <= seq and mp_t / t >= 2
            detail = (
                f"{fmt_time(t)} = {fmt_ratio(t, seq)} sequential ({fmt_time(seq)}); "
                f"multiprocessing.Pool {fmt_time(mp_t)} is {fmt_ratio(mp_t, t)} manycore"
                if ok is not None
                else "not measured"
            )
        else:
            need = 0.95 if w.key == "b" else 0.97
            eff = efficiency(seq, t, workers)
            rule = f"parallel efficiency ≥ {need:.0%} (time ≤ sequential / ({need} x {workers}))"
            ok = None if eff is None else eff >= need
            detail = (
                f"{fmt_time(t)} vs sequential {fmt_time(seq)}: efficiency {eff:.1%}; "
                f"limit {fmt_time(seq / (need * workers))}"
                if eff is not None
                else "not measured"
            )
        targets.append(Target(w.key, name, rule, ok, detail))
    return targets


def latency_target(w: Workload, name: str) -> Target:
    row = w.row(name)
    t = row.median if row else None
    raw = row.extra[1] if row and t is not None else None
    ok = None if t is None or raw is None else t <= 1.5 * raw
    detail = (
        f"{fmt_time(t)} vs raw Pipe {fmt_time(raw)} (just before) = {fmt_ratio(t, raw)}"
        if ok is not None
        else "not measured"
    )
    return Target("e", name, "submit round trip ≤ 1.5 x raw Pipe", ok, detail)


def other_targets(w: Workload) -> list[Target]:
    if w.key == "e":
        return [latency_target(w, name) for name in (ManycorePool.name, IMPORTABLE)]
    t, seq = w.get(MANYCORE_REF), w.get(Sequential.name)
    peers = [
        r
        for r in w.rows
        if r.median is not None and r.name not in (Sequential.name, MANYCORE_REF, ManycorePool.name)
    ]
    best = min(peers, key=lambda r: r.median or 0.0, default=None)
    if not (t and seq and best and best.median):
        return [
            Target(
                "d",
                MANYCORE_REF,
                "≤ 3x sequential, ≥ 20x faster than the best peer",
                None,
                "not measured",
            )
        ]
    passed = t <= 3 * seq and best.median >= 20 * t
    detail = (
        f"mc.map {fmt_time(t)} = {fmt_ratio(t, seq)} sequential; best peer {best.name} "
        f"{fmt_time(best.median)} is {best.median / t:.1f}x mc.map"
    )
    rule = "≤ 3x sequential and ≥ 20x faster than the best peer"
    return [Target("d", MANYCORE_REF, rule, passed, detail)]


def targets_section(workloads: dict[str, Workload], workers: int) -> list[str]:
    targets: list[Target] = []
    for key in "abcde":
        if key in workloads:
            w = workloads[key]
            targets += speed_targets(w, workers) if key in "abc" else other_targets(w)
    verdict = {True: "**PASS**", False: "**FAIL**", None: "reported"}
    rows = [
        [
            f"({t.label})",
            t.runner,
            t.rule,
            verdict[t.passed if "not measured" not in t.detail else None],
            t.detail,
        ]
        for t in targets
    ]
    return [
        "## Targets",
        "",
        "Ratios from this run only.",
        "",
        *markdown_table(["workload", "runner", "target", "result", "measured"], rows),
    ]


# ----------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Sizes:
    squares: int = 1_000_000
    ms_tasks: int = 2_000
    long_tasks: int = 4
    long_seconds: float = 0.5
    arrays: int = 64
    array_len: int = 1_000_000  # float64: 8 MB each
    round_trips: int = 2_000


QUICK = Sizes(squares=100_000, ms_tasks=200, long_seconds=0.1, arrays=8, round_trips=300)
DEFAULT_REPEAT = {"a": 5, "b": 3, "c": 3, "d": 5, "f": 5}


def run_workloads(
    only: str, sizes: Sizes, workers: int, repeat: int | None, loops_per_ms: int
) -> dict[str, Workload]:
    def rep(key: str) -> int:
        return repeat or DEFAULT_REPEAT[key]

    out: dict[str, Workload] = {}
    if "a" in only:
        out["a"] = bench_map(
            "a",
            f"{sizes.squares:,} x `x*x` over `range({sizes.squares:,})`",
            square,
            range(sizes.squares),
            workers,
            rep("a"),
        )
    if "b" in only:
        out["b"] = bench_map(
            "b",
            f"{sizes.ms_tasks:,} x ~1 ms of pure-Python work",
            spin,
            [loops_per_ms] * sizes.ms_tasks,
            workers,
            rep("b"),
        )
    if "c" in only:
        loops = round(loops_per_ms * sizes.long_seconds * 1000)
        out["c"] = bench_map(
            "c",
            f"{sizes.long_tasks} x ~{sizes.long_seconds} s of pure-Python work",
            spin,
            [loops] * sizes.long_tasks,
            workers,
            rep("c"),
        )
    if "d" in only:
        out["d"] = bench_arrays(sizes, workers, rep("d"))
    if "e" in only:
        out["e"] = bench_latency(workers, sizes.round_trips)
    if "f" in only:
        out["f"] = bench_cold(workers, rep("f"))
    return out


def bench_arrays(sizes: Sizes, workers: int, repeat: int) -> Workload:
    mb = sizes.array_len * 8 / 1e6
    title = f"{sizes.arrays} NumPy float64 arrays of {mb:.0f} MB → `a.sum()`"
    if np is None:
        return Workload("d", title, notes=["skipped: numpy is not installed"])
    rng = np.random.default_rng(0)
    arrays = [rng.random(sizes.array_len) for _ in range(sizes.arrays)]
    work = bench_map("d", title, array_sum, arrays, workers, repeat)
    work.notes += shared_array_notes(arrays, workers, repeat)
    return work


def shared_array_notes(arrays: list[Any], workers: int, repeat: int) -> list[str]:
    """Two more figures for (d): the same map when the arrays already live in
    ``mc.shared_array`` (nothing is copied), and the parent's peak memory for the
    plain map, measured in a fresh process (the target: at most 1.3x the input)."""
    expected = [array_sum(a) for a in arrays]
    shared = [mc.shared_array(a) for a in arrays]
    times = []
    with mc.Pool(workers) as pool:
        pool.map(array_sum, shared[: 2 * workers])
        for _ in range(repeat):
            started = time.perf_counter()
            result = pool.map(array_sum, shared)
            times.append(time.perf_counter() - started)
    ok = same(result, expected)
    del shared
    size = sum(a.nbytes for a in arrays)
    probe = subprocess.run(
        [sys.executable, "-c", _PEAK_PROBE, str(len(arrays)), str(arrays[0].size), str(workers)],
        capture_output=True,
        text=True,
        check=False,
    )
    peak = probe.stdout.split()
    notes = [
        f"- manycore Pool with the arrays already in `mc.shared_array` (made outside the "
        f"timing; no copy at all): median {statistics.median(times) * 1e3:.1f} ms over "
        f"{repeat} runs{'' if ok else ' (WRONG RESULT)'}.",
    ]
    if probe.returncode == 0 and len(peak) == 2:
        base, top = (int(x) for x in peak)
        notes.append(
            f"- Parent's peak memory (VmHWM of a fresh process that builds the arrays "
            f"and runs `Pool.map` over them): {top / size:.2f}x the input "
            f"({size / 1e6:.0f} MB; target ≤ 1.3x), of which {(top - base) / size:.2f}x "
            "was added by the map."
        )
    return notes


# Builds the arrays, warms a pool up, then reports the peak resident memory before
# and after one map. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
# child of a big process would start with its parent's peak.
_PEAK_PROBE = """
import sys
import numpy as np
import manycore as mc

def peak():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

n, length, workers = map(int, sys.argv[1:4])
arrays = [np.random.default_rng(i).random(length) for i in range(n)]
def total(a):
    return float(a.sum())
with mc.Pool(workers) as pool:
    pool.map(total, arrays[:2])
    before = peak()
    pool.map(total, arrays)
    after = peak()
print(before, after)
"""


def versions() -> str:
    names = ["manycore", "cloudpickle", "numpy", "joblib", "mpire"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def source_revision() -> str:
    """The git commit of the code measured, and whether ``src/`` differs from it."""
    root = DEFAULT_OUTPUT.parent.parent
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes in src/" if dirty else "")


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def header_section(args: argparse.Namespace, loops_per_ms: int, load: str) -> list[str]:
    root = DEFAULT_OUTPUT.parent.parent
    python = os.path.relpath(sys.executable, root) if sys.executable else "python"
    command = " ".join([python, "benchmarks/run.py", *sys.argv[1:]])
    return [
        "# manycore benchmarks",
        "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- Command (from the repository root): `{command}`",
        f"- Machine: {cpu_model()}; `os.cpu_count()` = {os.cpu_count()}, "
        f"`manycore.usable_cpus()` = {mc.usable_cpus()}; {platform.platform()}; "
        f"load average (1, 5, 15 min) at start: {load}, at end: {load_average()}",
        f"- manycore source: {source_revision()}",
        f"- Workers for every parallel runner: {args.workers}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); "
        f"multiprocessing default start method: `{multiprocessing.get_start_method()}`",
        f"- Packages: {versions()}",
        f"- Calibration: `spin(n)` runs {loops_per_ms:,} loops per ms on this machine "
        "(best of 5 probes, in the parent).",
        "- Times are medians of the repeats; `x sequential` and `x mc.map` are time ratios "
        "(lower is faster). Every result was checked against the sequential loop's.",
        "",
    ]


def settings_section() -> list[str]:
    lines = ["## Runner settings", ""]
    lines += [f"- **{cls.name}**: {cls.settings}" for cls in RUNNERS]
    lines += [
        "- **raw multiprocessing.Pipe** (reference for (e)): a `multiprocessing.Process` "
        "(default start method) echoes what it receives on a `multiprocessing.Pipe()`.",
        "- (a)-(d): every runner's pool is built and warmed up (one small call of the same "
        "function on a slice of the input) outside the timed region, then the repeats go "
        "round-robin over the runners. (e): one runner at a time, warmed up first. (f): timed "
        "from pool construction to the first result of `f(7)` (run as in (e)); the shutdown "
        "is timed apart.",
        "- (e) **manycore Pool, importable f**: the same Pool round trip with `operator.pos` "
        "instead of `noop` from the script's `__main__` (manycore pickles a `__main__` function "
        "by value on every submit; every other runner uses `noop`).",
        "",
    ]
    return lines


def render(
    args: argparse.Namespace, workloads: dict[str, Workload], loops_per_ms: int, load: str
) -> str:
    lines = header_section(args, loops_per_ms, load) + settings_section()
    for key, w in workloads.items():
        lines += [f"## ({key}) {w.title}", ""]
        if w.notes and not w.rows:  # skipped
            lines += [*w.notes, ""]
            continue
        if key in "abcd":
            lines += map_table(w, args.workers, with_efficiency=key in "bc")
            lines += ["", *w.notes] if w.notes else []
        elif key == "e":
            lines += latency_table(w)
        else:
            lines += cold_table(w)
        lines.append("")
    lines += targets_section(workloads, args.workers)
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--workers",
        type=int,
        default=mc.usable_cpus(),
        help="workers for every parallel runner (default: usable CPUs)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repeats of each timed workload (default: 3 for (b) and (c), 5 else)",
    )
    parser.add_argument(
        "--only",
        default=",".join(ALL_WORKLOADS),
        help="comma-separated workloads to run, e.g. a,e (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes for a smoke run; writes no file unless --output",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown report path (default: {DEFAULT_OUTPUT.name} here)",
    )
    args = parser.parse_args(argv)
    args.only = "".join(sorted({k.strip() for k in args.only.split(",") if k.strip()}))
    unknown = set(args.only) - set(ALL_WORKLOADS) or not args.only
    if unknown:
        parser.error(f"--only takes letters from {','.join(ALL_WORKLOADS)}")
    if args.workers < 1 or (args.repeat is not None and args.repeat < 1):
        parser.error("--workers and --repeat must be at least 1")
    if args.output is None and not args.quick:
        args.output = DEFAULT_OUTPUT
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    load = load_average()
    loops_per_ms = calibrate_spin(0.001)
    print(f"calibrated: {loops_per_ms:,} loops of spin() per ms", file=sys.stderr)
    workloads = run_workloads(args.only, sizes, args.workers, args.repeat, loops_per_ms)
    report = render(args, workloads, loops_per_ms, load)
    print(report)
    if args.output is not None:
        # Sections written by other scripts (soak.py's "## Soak") are kept.
        if args.output.exists():
            old = args.output.read_text(encoding="utf-8")
            kept = old.find("\n## Soak")
            if kept >= 0:
                report = report.rstrip("\n") + "\n" + old[kept:]
        args.output.write_text(report, encoding="utf-8")
        print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
