"""Timing: every runner on one workload, checked against the sequential loop."""

from __future__ import annotations

import math
import multiprocessing
import operator
import statistics
import sys
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from functools import partial

from manycore._cli._bench.cpu import tree_cpu
from manycore._cli._bench.runners import RUNNERS, ManycorePool, R, Runner, T, installed, opened
from manycore._cli._bench.work import echo as echo_child


@dataclass
class Row:
    """One runner's measurements in one workload: seconds, or a note why there are none."""

    name: str
    times: list[float] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)  # (e): p90, raw pipe; (f): shutdowns
    second: list[float] = field(default_factory=list)  # (f): the second pool of the process
    note: str = ""
    cpu: list[float] = field(default_factory=list)  # the tree's CPU seconds of each time

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.note else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu and not self.note else None


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


def same(got: Sequence[object], expected: Sequence[object]) -> bool:
    return len(got) == len(expected) and all(g == e for g, e in zip(got, expected, strict=True))


def open_all(
    stack: ExitStack, workers: int, warm_up: Callable[[Runner], object], rows: dict[str, Row]
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
    fn: Callable[[T], R],
    items: Sequence[T],
    expected: Sequence[R],
    row: Row,
    skip: Collection[int] = (),
) -> None:
    """One timed, verified map, with the CPU time of the process tree beside it (less
    the processes in ``skip``); a wrong result or an error becomes the row's note."""
    try:
        cpu = tree_cpu(skip)
        started = time.perf_counter()
        result = runner.map(fn, items)
        row.times.append(time.perf_counter() - started)
        after = tree_cpu(skip)
        if cpu is not None and after is not None:
            row.cpu.append(after - cpu)
    except Exception as exc:
        row.note = f"ERROR: {type(exc).__name__}: {exc}"
        return
    if not same(result, expected):
        row.note = "WRONG RESULT (differs from the sequential loop)"


def bench_map(
    key: str,
    title: str,
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    repeat: int,
    skip: Collection[int] = (),
) -> Workload:
    """Every runner's warm pool is open at once and the repeats go round-robin, so a
    burst of load from elsewhere on the machine falls on all runners alike. ``skip``:
    processes left out of the CPU time (a hog that is not the runners' work)."""
    rows = {cls.name: Row(cls.name) for cls in RUNNERS}
    expected = list(map(fn, items))
    with ExitStack() as stack:
        print(f"  ({key}) opening and warming up the runners ...", file=sys.stderr, flush=True)
        live = open_all(stack, workers, lambda r: r.map(fn, items[: 2 * workers]), rows)
        for i in range(repeat):
            print(f"  ({key}) round {i + 1} of {repeat} ...", file=sys.stderr, flush=True)
            for runner in live:
                if not rows[runner.name].note:
                    time_once(runner, fn, items, expected, rows[runner.name], skip)
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


def timed_calls(call: Callable[[int], object], xs: range) -> tuple[list[float], bool]:
    """Seconds of each ``call(x)``, and whether every call gave ``x`` back."""
    times, ok = [], True
    for x in xs:
        started = time.perf_counter()
        result = call(x % 97)
        times.append(time.perf_counter() - started)
        ok = ok and result == x % 97
    return times, ok


def round_trips(call: Callable[[int], object], count: int) -> tuple[list[float], bool, float]:
    """``count`` timed round trips of ``call`` after ``count // 10`` warm-up ones, and
    the process tree's CPU seconds per timed round trip (NaN without psutil)."""
    timed_calls(call, range(max(10, count // 10)))
    cpu = tree_cpu()
    times, ok = timed_calls(call, range(count))
    after = tree_cpu()
    per_trip = (after - cpu) / count if cpu is not None and after is not None else math.nan
    return times, ok, per_trip


RAW_PIPE = "raw multiprocessing.Pipe"


class PipeEcho:
    """The reference of (e): the parent and one child echoing over ``multiprocessing.Pipe``."""

    def __enter__(self) -> PipeEcho:
        self.conn, child = multiprocessing.Pipe()
        self.proc = multiprocessing.Process(target=echo_child, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        return self

    def ping(self, x: int) -> object:
        self.conn.send(x)
        return self.conn.recv()

    def __exit__(self, *exc_info: object) -> None:
        with suppress(OSError):
            self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


IMPORTABLE = "manycore Pool, importable f"


def latency_cases(
    noop: Callable[[object], object],
) -> list[tuple[type[Runner], Callable[[int], object], str]]:
    """(runner, task function, row name) for (e): each parallel runner with ``noop``,
    and manycore's Pool once more with ``operator.pos``, a function that is not in
    ``__main__`` (manycore pickles a ``__main__`` function again on every submit)."""
    cases: list[tuple[type[Runner], Callable[[int], object], str]]
    cases = [(cls, noop, cls.name) for cls in RUNNERS if cls.parallel]
    cases.insert(2, (ManycorePool, operator.pos, IMPORTABLE))
    return cases


def bench_latency(workers: int, count: int, noop: Callable[[object], object]) -> Workload:
    """Each runner's round trips, right after as many raw-pipe ones (its reference).

    The reference is measured next to each runner, so that their ratio holds when the
    machine's load drifts, but before the runner's pool exists, so that the pool's
    threads cannot slow the reference down.
    """
    workload = Workload("e", f"round trip of one trivial task (median of {count}, after warm-up)")
    all_raw: list[float] = []

    def measure(runner: Runner, fn: Callable[[int], object], name: str, raw: list[float]) -> Row:
        runner.call(fn, 0)  # the pool is up before the warm-up round trips start
        times, ok, cpu = round_trips(lambda x: runner.call(fn, x), count)
        p90 = statistics.quantiles(times, n=10)[-1]
        row = Row(name, [statistics.median(times)], [p90, statistics.median(raw)])
        row.cpu = [] if math.isnan(cpu) else [cpu]
        row.note = "" if ok else "WRONG RESULT"
        return row

    raw_cpu: list[float] = []
    with PipeEcho() as echo:
        for runner_cls, fn, name in latency_cases(noop):
            print(f"  (e) {name} ...", file=sys.stderr, flush=True)
            raw, _, cpu = round_trips(echo.ping, count)
            all_raw += raw
            raw_cpu += [] if math.isnan(cpu) else [cpu]
            row = run_guarded(runner_cls, workers, partial(measure, fn=fn, name=name, raw=raw))
            row.name = name
            workload.rows.append(row)
    p90 = statistics.quantiles(all_raw, n=10)[-1]
    raw_row = Row(RAW_PIPE, [statistics.median(all_raw)], [p90, statistics.median(all_raw)])
    raw_row.cpu = raw_cpu
    workload.rows.insert(0, raw_row)
    return workload
