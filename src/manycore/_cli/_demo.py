"""``manycore demo``: the classic parallel-processing workloads, timed honestly.

Each workload runs first as a plain Python loop, then through ``manycore.map`` on a
warm pool, and the results are compared. The table shows time, speedup and parallel
efficiency, and a verdict that is derived from the measured numbers: small tasks
that do not pay are reported as such, and I/O-bound work is recognised by how little
CPU time its sequential run used.

The task functions are module-level so that the processes backend can send them to
its workers by reference.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import manycore as mc

__all__ = ["DemoError", "Row", "Sizes", "count_primes", "fake_download", "run_demo", "verdict"]

# A parallel run must be at least this much faster than the loop to "pay".
_PAYS = 1.2
# A sequential run that used less CPU than this share of its wall time was waiting.
_IO_BOUND_CPU_SHARE = 0.5
# Below this cost per task, dispatching one costs more than running it.
_SMALL_TASK_S = 100e-6
# Other programs using this many CPUs during a run make its speedup unrepresentative.
_BUSY_CPUS = 0.5
# Short measurements are repeated (best of) until they add up to this much time.
_REPEAT_BUDGET_S = 0.2
_MAX_REPEATS = 5
_MICRO, _TIMES = "\u00b5", "\u00d7"  # the micro sign and the multiplication sign


class DemoError(RuntimeError):
    """A parallel result differed from the sequential one."""


# ------------------------------------------------------------------ the tasks


def square(x: int) -> int:
    """The smallest useful task: far cheaper than sending it anywhere."""
    return x * x


def count_primes(span: tuple[int, int]) -> int:
    """Primes ``p`` with ``lo <= p < hi``, by trial division (pure Python, CPU-bound)."""
    lo, hi = span
    count = 0
    for n in range(max(lo, 2), hi):
        if n % 2 == 0:
            count += n == 2
            continue
        d = 3
        while d * d <= n:
            if n % d == 0:
                break
            d += 2
        else:
            count += 1
    return count


def fake_download(request: tuple[str, float]) -> str:
    """Stands in for fetching a URL: waits ``seconds`` without using the CPU."""
    url, seconds = request
    time.sleep(seconds)
    return f"<html>{url}</html>"


def worker_pid(_: int) -> int:
    """Which worker ran this (used to start and warm the pool)."""
    return os.getpid()


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Sizes:
    """How big each workload is."""

    squares: int
    factorials: range
    primes_below: int
    prime_blocks: int
    downloads: int
    download_s: float
    kernel_bands: int = 96  # the GIL-free kernel: bands of a width x width Mandelbrot
    kernel_width: int = 1920


FULL = Sizes(
    squares=10_000,
    factorials=range(1, 4001),
    primes_below=1_200_000,
    prime_blocks=100,
    downloads=40,
    download_s=0.05,
)
QUICK = Sizes(
    squares=10_000,
    factorials=range(1, 801),
    primes_below=100_000,
    prime_blocks=20,
    downloads=12,
    download_s=0.02,
    kernel_bands=48,
    kernel_width=1200,
)


@dataclass(frozen=True)
class Workload:
    """One function over a list of inputs, run on each of ``backends``."""

    name: str
    # (the four workloads differ in their item types: a list of them is heterogeneous)
    fn: Callable[[Any], object]
    inputs: list[Any]
    backends: tuple[str, ...]
    combine: Callable[[list[Any]], object] = list  # applied to the results, inside the timing
    per_cpu: bool = False  # computes: as many threads as processes (not extra for waits)


def plan(sizes: Sizes) -> list[Workload]:
    """The four workloads, in the order the table shows them."""
    step = sizes.primes_below // sizes.prime_blocks
    spans = [(lo, min(lo + step, sizes.primes_below)) for lo in range(0, sizes.primes_below, step)]
    urls = [(f"https://example.org/page/{i}", sizes.download_s) for i in range(sizes.downloads)]
    f = sizes.factorials
    return [
        Workload(
            f"sum of squares, {sizes.squares:,} numbers",
            square,
            list(range(sizes.squares)),
            ("processes",),
            combine=sum,
        ),
        Workload(
            f"factorials of {f.start:,}..{f.stop - 1:,}", math.factorial, list(f), ("processes",)
        ),
        Workload(
            f"count primes below {sizes.primes_below:,} ({len(spans)} ranges)",
            count_primes,
            spans,
            ("processes",),
        ),
        Workload(
            f"{sizes.downloads} downloads, {sizes.download_s * 1000:.0f} ms wait each",
            fake_download,
            urls,
            ("threads", "processes"),
        ),
    ]


def gilfree_workload(sizes: Sizes, say: Callable[[str], None]) -> Workload | None:
    """The compiled kernel that releases the GIL (Pythran, else NumPy): threads
    run it side by side without pickling. None, and a line said, without either."""
    from manycore._cli._kernel import band, load

    kernel = load(say=say)
    if kernel is None:
        say("GIL-free kernel: skipped (it needs NumPy or Pythran: pip install numpy)")
        return None
    bands, width = sizes.kernel_bands, sizes.kernel_width
    fn = functools.partial(band, bands=bands, width=width, maxiter=300, kind=kernel.name)
    return Workload(
        f"{kernel.name} kernel, {bands} Mandelbrot bands (releases the GIL)",
        fn,
        list(range(bands)),
        ("threads", "processes"),
        per_cpu=True,
    )


# ------------------------------------------------------------------ measuring


class CpuMeter:
    """CPU time used by other programs while the demo runs (Linux ``/proc``; else None).

    A CPU-bound speedup below the worker count may mean overhead, or that other
    programs were using the CPUs at the same time; this tells the two apart.
    """

    def __init__(self, worker_pids: Sequence[int] | None):
        """``worker_pids``: every worker process of the pool (None: cannot measure)."""
        self.worker_pids = sorted(set(worker_pids)) if worker_pids is not None else None
        self._tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0

    def sample(self) -> tuple[float, float] | None:
        """(CPU-seconds the machine has been busy, CPU-seconds this demo has used)."""
        if self.worker_pids is None:
            return None
        try:
            with open("/proc/stat") as f:
                ticks = [int(x) for x in f.readline().split()[1:9]]
            mine = 0
            for pid in self.worker_pids:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                mine += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            return None
        busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        return busy / self._tick, mine / self._tick + time.process_time()

    @staticmethod
    def others(
        before: tuple[float, float] | None, after: tuple[float, float] | None, wall: float
    ) -> float | None:
        """How many CPUs other programs kept busy on average between two samples."""
        if before is None or after is None or wall < 0.2:
            return None  # no /proc, or too short for the clock tick to tell
        busy, mine = after[0] - before[0], after[1] - before[1]
        return max(0.0, (busy - mine) / wall)


@dataclass(frozen=True)
class Row:
    """One workload on one backend, with its sequential reference."""

    workload: str
    backend: str
    workers: int
    tasks: int
    sequential_s: float
    sequential_cpu_s: float
    parallel_s: float
    others_cpus: float | None = None  # CPUs other programs used during the parallel run

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.parallel_s if self.parallel_s > 0 else math.inf

    @property
    def efficiency(self) -> float:
        """Speedup per worker: 1.0 means every worker was fully useful."""
        return self.speedup / self.workers

    @property
    def per_task_s(self) -> float:
        return self.sequential_s / max(1, self.tasks)

    @property
    def io_bound(self) -> bool:
        """The sequential run spent most of its time waiting, not computing."""
        return self.sequential_cpu_s < _IO_BOUND_CPU_SHARE * self.sequential_s


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # this process's CPU time (worker processes not included)
    others_cpus: float | None
    result: object


def _timed(call: Callable[[], object], meter: CpuMeter) -> Timing:
    """The fastest of a few runs of ``call`` (short calls are repeated)."""
    best: Timing | None = None
    spent = 0.0
    for _ in range(_MAX_REPEATS):
        before = meter.sample()
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = call()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if best is None or wall < best.wall_s:
            best = Timing(wall, cpu, meter.others(before, meter.sample(), wall), result)
        spent += wall
        if spent >= _REPEAT_BUDGET_S:
            break
    assert best is not None
    return best


def _then(
    combine: Callable[[list[Any]], object], run: Callable[[], list[Any]]
) -> Callable[[], object]:
    """``combine(run())``, as a call to time."""
    return lambda: combine(run())


def measure(work: Workload, workers: dict[str, int], meter: CpuMeter) -> list[Row]:
    """Run ``work`` as a loop, then on each backend; check every result against the loop's."""
    fn, inputs, combine = work.fn, work.inputs, work.combine
    seq = _timed(lambda: combine([fn(x) for x in inputs]), meter)
    rows = []
    for backend in work.backends:
        count = workers["processes"] if work.per_cpu else workers[backend]
        run = functools.partial(mc.map, fn, inputs, workers=count, backend=backend)
        par = _timed(_then(combine, run), meter)
        if par.result != seq.result:
            raise DemoError(
                f"{work.name}: manycore.map on {backend} returned a different result "
                f"than the sequential loop"
            )
        rows.append(
            Row(
                work.name,
                backend,
                count,
                len(inputs),
                seq.wall_s,
                seq.cpu_s,
                par.wall_s,
                par.others_cpus,
            )
        )
    return rows


# ------------------------------------------------------------------ judging


def _duration(seconds: float, micro: str) -> str:
    if seconds < 1e-3:
        return (
            f"{seconds * 1e6:.2g} {micro}s" if seconds < 1e-5 else f"{seconds * 1e6:.0f} {micro}s"
        )
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def verdict(row: Row, peers: Sequence[Row], micro: str = _MICRO, times: str = _TIMES) -> str:
    """Plain words for what the numbers say; ``peers`` are the same workload's rows."""
    if row.speedup < _PAYS:
        if row.per_task_s < _SMALL_TASK_S:
            return (
                f"parallel does not pay: tasks too small "
                f"({_duration(row.per_task_s, micro)} each, "
                f"{_duration(row.sequential_s, micro)} in all)"
            )
        if row.workers == 1:
            return "parallel does not pay: only 1 worker"
        if _busy(row):
            return f"parallel does not pay here: {_busy(row)}"
        return "parallel does not pay: overhead outweighs the gain"
    if row.io_bound:
        best = max(peers, key=lambda r: r.speedup)
        others = [r for r in peers if r is not row]
        if not others:
            return "I/O-bound: parallel pays"
        if best is row:
            runner_up = max(others, key=lambda r: r.speedup)
            ratio = row.speedup / runner_up.speedup
            if ratio < 1.1:
                return f"I/O-bound: {row.backend} on par with {runner_up.backend}"
            return (
                f"I/O-bound: {row.backend} win, {ratio:.1f}{times} faster than {runner_up.backend}"
            )
        ratio = best.speedup / row.speedup
        return (
            f"I/O-bound: pays, but only {row.workers} waits at a time; "
            f"{best.backend} {ratio:.1f}{times} faster"
        )
    cpus = mc.usable_cpus()
    if row.workers > cpus and row.speedup >= 0.8 * cpus:
        return f"parallel pays, capped by {cpus} usable CPUs"
    if row.efficiency >= 0.8:
        return "parallel pays: near-linear speedup"
    if _busy(row):
        return f"parallel pays, below linear: {_busy(row)}"
    return "parallel pays, below linear"


def _busy(row: Row) -> str:
    """Why a CPU-bound run fell short, if other programs were using the CPUs."""
    if row.others_cpus is None or row.others_cpus < _BUSY_CPUS:
        return ""
    return f"other programs kept {row.others_cpus:.1f} CPUs busy"


# ------------------------------------------------------------------ showing


def format_table(rows: Sequence[Row], micro: str = _MICRO, times: str = _TIMES) -> str:
    """An aligned plain-text table, one line per row."""
    header = (
        "workload",
        "backend",
        "workers",
        "sequential s",
        "manycore s",
        "speedup",
        "efficiency",
        "verdict",
    )
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        peers = [r for r in rows if r.workload == row.workload]
        lines.append(
            (
                row.workload,
                row.backend,
                str(row.workers),
                _seconds(row.sequential_s),
                _seconds(row.parallel_s),
                f"{row.speedup:.2f}{times}",
                f"{row.efficiency:.0%}",
                verdict(row, peers, micro, times),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {2, 3, 4, 5, 6}

    def fmt(line: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


def _seconds(value: float) -> str:
    """Seconds with three decimals, or two significant digits below 0.01 s (never 0.000)."""
    return f"{value:.3f}" if value >= 0.01 else f"{value:.2g}"


def _symbols(out: TextIO) -> tuple[str, str]:
    """The micro and times signs, or ASCII stand-ins where ``out`` cannot encode them."""
    try:
        (_MICRO + _TIMES).encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "u", "x"
    return _MICRO, _TIMES


def _start_pools(counts: dict[str, int], say: Callable[[str], None]) -> list[int]:
    """Start and warm both pools; time the first call, which starts the processes."""
    n = counts["processes"]
    t0 = time.perf_counter()
    pids = mc.map(worker_pid, range(2 * n), workers=n)
    cold = time.perf_counter() - t0
    say(
        f"cold start: the first manycore.map call took {cold:.2f} s: it started {n} worker "
        f"process{'es' if n > 1 else ''} ({len(set(pids))} answered). "
        "Not counted below: the pool stays warm."
    )
    threads = counts["threads"]
    mc.map(worker_pid, range(2 * threads), workers=threads, backend="threads")
    return pids


def run_demo(workers: int | None = None, quick: bool = False, out: TextIO | None = None) -> None:
    """Time every workload and print the table to ``out`` (default: stdout).

    Raises :class:`DemoError` when a parallel result differs from the sequential one.
    """
    stream = out if out is not None else sys.stdout
    micro, times = _symbols(stream)
    cpus = mc.usable_cpus()
    n = workers or cpus
    counts = {"processes": n, "threads": min(32, n + 4)}  # manycore's defaults for n CPUs

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    say(
        f"manycore {mc.__version__} demo{' (--quick sizes)' if quick else ''}: "
        "each workload as a plain loop, then with manycore.map on the same inputs"
    )
    say(
        f"CPUs: os.cpu_count() = {os.cpu_count()}, manycore.usable_cpus() = {cpus}; "
        f"workers: {n} process{'es' if n > 1 else ''}, {counts['threads']} threads"
    )
    if n > cpus:
        say(
            f"note: {n} worker processes share {cpus} usable CPUs; "
            f"CPU-bound speedup cannot exceed {cpus}{times}"
        )
    pids = _start_pools(counts, say)
    # Without every worker's pid, the workers' own CPU time would count as other programs'.
    meter = CpuMeter(pids if len(set(pids)) == n else None)
    say()
    rows: list[Row] = []
    sizes = QUICK if quick else FULL
    kernel = gilfree_workload(sizes, say)
    for work in [*plan(sizes), *([kernel] if kernel else [])]:
        rows.extend(measure(work, counts, meter))
    say(format_table(rows, micro, times))
    say()
    say(
        f"speedup = sequential s / manycore s; efficiency = speedup / workers. Short runs: "
        f"best of up to {_MAX_REPEATS}. Every parallel result was checked against the loop's."
    )
    busy = [r.others_cpus for r in rows if r.others_cpus is not None and not r.io_bound]
    if busy and max(busy) >= _BUSY_CPUS:
        say(
            f"note: other programs on this machine used up to {max(busy):.1f} CPUs during the "
            f"CPU-bound parallel runs; on an idle machine their speedups would be higher."
        )
