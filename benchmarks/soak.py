"""Soak benchmark: a long map with raising, crashing and hanging items, checked exactly.

The project's soak target: 200,000 items on 2 workers where 1% raise, 0.1% crash
by ``os._exit``, 0.1% exceed a 0.2 s timeout, with ``max_tasks_per_worker=1000``.
It must finish with exactly the expected results and failures; the report gives
the total time, the worker restarts and the parent's memory growth (target: under
10%).

Which items fail is fixed by their index, so the expected outcome of every item is
known in advance:

    index % 1000 == 3    the worker exits at once (``os._exit(3)``)  -> WorkerCrashed
    index % 1000 == 7    sleeps 1 s, past the 0.2 s timeout           -> TaskTimeout
    index % 100 == 17    raises ValueError("soak item <index>")       -> ValueError
    any other index      returns index * index

One pool runs a warm-up soak (a tenth of the items by default) and then the full
one. Results stream through ``imap`` and are checked as they arrive, so the
parent's memory growth (resident memory after the warm-up vs after the full run,
after ``gc.collect()``) is manycore's own. ``--hold`` collects them with ``map``
into a list instead; its growth, reported but not checked, then also includes the
freed list's memory that CPython and glibc keep. The script
prints a Markdown table and exits with status 1 if any check fails (a wrong or
missing result, a failure of the wrong kind or index, unexpected restarts, leaked
child processes or file descriptors, memory growth of 10% or more), or if the run
takes longer than ``--max-seconds`` (then every thread's stack is dumped first).

    python benchmarks/soak.py                          # 200,000 items, spawn
    python benchmarks/soak.py --start-method fork
    python benchmarks/soak.py --items 20000            # a shorter soak
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import faulthandler
import gc
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

import manycore as mc

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 0.2  # seconds one item may run
HANG = 1.0  # seconds a "timeout" item sleeps: well past TIMEOUT
EXIT_CODE = 3  # what a "crash" item passes to os._exit
MAX_TASKS = 1000  # max_tasks_per_worker
GROWTH_LIMIT = 10.0  # percent of the parent's RSS after the warm-up
KINDS = ("ok", "raise", "crash", "timeout")


# ---------------------------------------------------------------------- the work


def soak_task(i: int) -> int:
    """The task: its outcome depends on ``i`` alone (see the module docstring)."""
    r = i % 1000
    if r == 3:
        os._exit(EXIT_CODE)
    if r == 7:
        time.sleep(HANG)
        return -1  # never reached in time: the worker is killed at TIMEOUT
    if i % 100 == 17:
        raise ValueError(f"soak item {i}")
    return i * i


def kind_of(i: int) -> str:
    r = i % 1000
    if r == 3:
        return "crash"
    if r == 7:
        return "timeout"
    if i % 100 == 17:
        return "raise"
    return "ok"


def expected_counts(n: int) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for i in range(n):
        counts[kind_of(i)] += 1
    return counts


# ------------------------------------------------------------------ verification


def problem_with(i: int, got: Any) -> str | None:
    """Why ``got`` is not the expected outcome of item ``i``, or None if it is."""
    kind = kind_of(i)
    if kind == "ok":
        if isinstance(got, mc.Failure):
            hint = ""
            if isinstance(got.exception, mc.TaskTimeout):
                # i * i cannot take 0.2 s: its worker was held up (an overloaded machine?)
                hint = " (spurious timeout: the worker did not get to run for 0.2 s?)"
            return f"item {i}: expected {i * i}, got {got!r}{hint}"
        return None if got == i * i else f"item {i}: expected {i * i}, got {got!r:.80}"
    if not isinstance(got, mc.Failure):
        return f"item {i}: expected a Failure ({kind}), got {got!r:.80}"
    if got.index != i or got.input != i:
        return f"item {i}: Failure with index={got.index}, input={got.input!r:.40}"
    exc = got.exception
    if kind == "raise":
        ok = type(exc) is ValueError and str(exc) == f"soak item {i}"
    elif kind == "crash":
        ok = isinstance(exc, mc.WorkerCrashed) and exc.index == i and exc.exitcode == EXIT_CODE
    else:
        ok = isinstance(exc, mc.TaskTimeout) and exc.index == i and exc.timeout == TIMEOUT
    return None if ok else f"item {i}: expected {kind}, got {exc!r:.200}"


@dataclass
class Verdict:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    problems: list[str] = field(default_factory=list)
    wrong: int = 0  # items whose outcome is not the expected one


def verify(results: Iterable[Any], n: int) -> Verdict:
    """Check every item's outcome as it comes; ``counts`` are the outcomes seen, by kind."""
    verdict = Verdict()
    seen = 0
    for i, got in enumerate(results):
        seen += 1
        if i >= n:
            continue
        problem = problem_with(i, got)
        if problem is None:
            verdict.counts[kind_of(i)] += 1
        else:
            verdict.wrong += 1
            if len(verdict.problems) < 10:
                verdict.problems.append(problem)
    if seen != n:
        verdict.problems.append(f"{seen} results for {n} items")
    return verdict


# ---------------------------------------------------------------------- the run


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """The process's high-water mark of resident memory, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak if sys.platform == "darwin" else peak * 1024
    # The kernel updates the high-water mark lazily: never report it below the current.
    return max(peak, int(psutil.Process().memory_info().rss))


def trimmed_rss() -> int | None:
    """RSS after glibc's ``malloc_trim(0)`` gives free heap memory back to the system
    (None where there is no glibc). Separates memory the allocator keeps from memory
    still in use: Python never calls malloc_trim itself."""
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return rss()


def steal_seconds() -> float | None:
    """CPU time the hypervisor gave to other guests (Linux in a VM), all CPUs."""
    return getattr(psutil.cpu_times(), "steal", None)


@dataclass
class Snapshot:
    """The parent's state between runs (results dropped, after gc.collect())."""

    rss: int
    peak: int
    objects: int  # objects tracked by the garbage collector
    fds: int
    threads: int
    children: list[psutil.Process]
    restarts: int

    @staticmethod
    def take(pool: mc.Pool) -> Snapshot:
        me = psutil.Process()
        return Snapshot(
            rss=rss(),
            peak=peak_rss(),
            objects=len(gc.get_objects()),
            fds=me.num_fds() if hasattr(me, "num_fds") else -1,
            threads=threading.active_count(),
            children=me.children(),
            # Private: manycore has no public stats API yet, so the count of worker
            # replacements is read from the process engine behind the pool.
            restarts=pool._backend._engine.restarts,  # type: ignore[attr-defined]
        )

    def zombies(self) -> int:
        n = 0
        for child in self.children:
            try:
                n += child.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                pass
        return n


def soak(pool: mc.Pool, n: int, hold: bool) -> tuple[Verdict, float, int]:
    """Run the soak; (verdict, seconds, parent RSS at the end, results still held).

    By default results stream through ``imap`` and are checked as they arrive, so
    the memory measured is manycore's own. With ``hold`` they are collected by
    ``map`` into a list first, as many programs do: the list itself (and the
    allocator's reluctance to return its memory) then shows in the growth.
    """
    started = time.perf_counter()
    if hold:
        results = pool.map(soak_task, range(n), timeout=TIMEOUT, on_error="collect")
        held = rss()
        verdict = verify(results, n)
        del results
    else:
        verdict = verify(pool.imap(soak_task, range(n), timeout=TIMEOUT, on_error="collect"), n)
        held = rss()
    return verdict, time.perf_counter() - started, held


def sequential_baseline(n: int) -> tuple[float, int]:
    """Seconds to run the successful items' work in this process (best of 3)."""
    ok = [i for i in range(n) if kind_of(i) == "ok"]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for i in ok:
            soak_task(i)
        best = min(best, time.perf_counter() - started)
    return best, len(ok)


# ------------------------------------------------------------------- the report


def fmt_time(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def source_revision() -> str:
    here = Path(mc.__file__).resolve().parent.parent
    if here != ROOT / "src":
        return f"imported from {here} (not this checkout's src/)"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not head:
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes in src/" if dirty else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000, help="items (default 200000)")
    parser.add_argument(
        "--start-method",
        choices=mc.START_METHODS,
        default="spawn",
        help="how workers start (default spawn)",
    )
    parser.add_argument("--workers", type=int, default=2, help="workers (default 2)")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="collect all results in a list with map (default: stream them through imap); "
        "the memory growth then includes the list and is reported, not checked",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="items of the warm-up soak (default items/10)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="fail (dumping every thread's stack) if the whole run takes longer (default 600)",
    )
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = max(1, args.items // 10)
    if args.items < 1 or args.workers < 1 or args.warmup < 1 or args.max_seconds <= 0:
        parser.error("--items, --workers, --warmup and --max-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.items
    # A hang is a failure too: dump every thread's stack and exit with status 1.
    faulthandler.dump_traceback_later(args.max_seconds, exit=True)
    load = load_average()
    date = datetime.datetime.now().astimezone()
    python = os.path.relpath(sys.executable, ROOT) if sys.executable else "python"
    command = " ".join([python, "benchmarks/soak.py", *sys.argv[1:]])
    expected = expected_counts(n)
    print(
        f"soak: {n:,} items ({expected['raise']} raise, {expected['crash']} crash, "
        f"{expected['timeout']} time out) on {args.workers} workers, {args.start_method}; "
        f"warm-up {args.warmup:,} items",
        file=sys.stderr,
    )

    started = time.perf_counter()
    pool = mc.Pool(args.workers, start_method=args.start_method, max_tasks_per_worker=MAX_TASKS)
    created = time.perf_counter() - started
    problems: list[str] = []
    try:
        warm_verdict, warm_time, _ = soak(pool, args.warmup, args.hold)
        problems += [f"warm-up: {p}" for p in warm_verdict.problems]
        before = Snapshot.take(pool)
        print(f"warm-up done in {warm_time:.1f} s; full run...", file=sys.stderr)

        steal_before = steal_seconds()
        verdict, run_time, held = soak(pool, n, args.hold)
        steal_after = steal_seconds()
        after = Snapshot.take(pool)
        trimmed = trimmed_rss()
    finally:
        shut_started = time.perf_counter()
        pool.shutdown(wait=True)
        shutdown_time = time.perf_counter() - shut_started
    faulthandler.cancel_dump_traceback_later()
    baseline, ok_items = sequential_baseline(n)
    children_left = psutil.Process().children()

    # ------------------------------------------------------------------ checks
    problems += verdict.problems
    for kind in KINDS:
        if verdict.counts[kind] != expected[kind]:
            problems.append(f"{kind}: {verdict.counts[kind]} correct of {expected[kind]} expected")
    restarts = after.restarts - before.restarts
    killed = expected["crash"] + expected["timeout"]  # each one costs exactly one worker
    retirements = restarts - killed
    # A retirement needs MAX_TASKS items run in one worker; items that completed in
    # this run, plus at most MAX_TASKS - 1 per worker carried over from the warm-up.
    most_retirements = (n - killed + args.workers * (MAX_TASKS - 1)) // MAX_TASKS
    if not 0 <= retirements <= most_retirements:
        problems.append(
            f"{restarts} restarts: expected {killed} (crashes + timeouts) plus "
            f"0..{most_retirements} retirements at the task limit"
        )
    growth = 100.0 * (after.rss - before.rss) / before.rss
    if growth >= GROWTH_LIMIT and not args.hold:
        problems.append(f"parent RSS grew {growth:.1f}% (limit {GROWTH_LIMIT:g}%)")
    if after.fds != before.fds:
        problems.append(f"open file descriptors: {before.fds} after the warm-up, {after.fds} after")
    if len(after.children) != args.workers or after.zombies():
        problems.append(
            f"{len(after.children)} child processes ({after.zombies()} zombies) after the run, "
            f"for {args.workers} workers"
        )
    if children_left:
        problems.append(f"{len(children_left)} child processes left after shutdown")

    # ------------------------------------------------------------------ report
    useful = verdict.counts["ok"] + verdict.counts["raise"]
    floor = expected["timeout"] * TIMEOUT / args.workers
    rows = [
        ("items", f"{n:,} (warm-up before it: {args.warmup:,} items, {fmt_time(warm_time)})"),
        ("total wall time (full run)", fmt_time(run_time)),
        ("throughput", f"{n / run_time:,.0f} items/s"),
        (
            "items that ran to the end per second",
            f"{useful / run_time:,.0f} (successes and raises: {useful:,} items)",
        ),
        (
            "time spent waiting out timeouts (lower bound)",
            f"{fmt_time(floor)} ({expected['timeout']} x {TIMEOUT:g} s / {args.workers} workers)",
        ),
        (
            "sequential baseline",
            f"{baseline * 1e3:.1f} ms for the {ok_items:,} successful items' work "
            "in the parent (best of 3)",
        ),
        (
            "worker restarts",
            f"{restarts} = {expected['crash']} crashes + {expected['timeout']} timeouts "
            f"+ {retirements} retirements at max_tasks_per_worker={MAX_TASKS}",
        ),
        ("successes", f"{verdict.counts['ok']:,} correct of {expected['ok']:,} expected"),
        (
            "ValueError (raised)",
            f"{verdict.counts['raise']:,} correct of {expected['raise']:,} expected",
        ),
        (
            "WorkerCrashed (os._exit)",
            f"{verdict.counts['crash']:,} correct of {expected['crash']:,} expected",
        ),
        (
            "TaskTimeout",
            f"{verdict.counts['timeout']:,} correct of {expected['timeout']:,} expected",
        ),
        (
            "wrong or missing outcomes",
            f"{verdict.wrong:,} (plus {warm_verdict.wrong} in the warm-up)",
        ),
        (
            "parent RSS after warm-up -> after run",
            f"{mib(before.rss)} -> {mib(after.rss)}: **{growth:+.1f}%** "
            + (
                "(results held in a list, then dropped; after gc.collect(); not checked)"
                if args.hold
                else f"(target < {GROWTH_LIMIT:g}%; after gc.collect())"
            ),
        ),
        (
            "parent RSS at the end of the run" + (" (the results held)" if args.hold else ""),
            mib(held),
        ),
        (
            "parent RSS after `malloc_trim(0)` (diagnostic, not the target)",
            "n/a (no glibc)"
            if trimmed is None
            else f"{mib(trimmed)}: {100.0 * (trimmed - before.rss) / before.rss:+.1f}% "
            "(free heap memory glibc had kept, given back)",
        ),
        (
            "parent peak RSS (ru_maxrss)",
            f"{mib(before.peak)} after warm-up, {mib(after.peak)} at end",
        ),
        ("objects tracked by gc", f"{before.objects:,} -> {after.objects:,}"),
        (
            "open fds / threads / children",
            f"{before.fds} / {before.threads} / {len(before.children)} -> "
            f"{after.fds} / {after.threads} / {len(after.children)} "
            f"({after.zombies()} zombies); {len(children_left)} children after shutdown",
        ),
        ("pool creation / shutdown", f"{created * 1e3:.0f} ms / {shutdown_time * 1e3:.0f} ms"),
        (
            "CPU steal during the full run",
            "n/a"
            if steal_before is None or steal_after is None
            else f"{steal_after - steal_before:.1f} s (all CPUs; time the VM did not run)",
        ),
    ]
    lines = [
        f"Soak: `{command}`",
        "",
        f"- Date: {date:%Y-%m-%d %H:%M %Z}; manycore source: {source_revision()}",
        f"- Machine: `os.cpu_count()` = {os.cpu_count()}; {platform.platform()}; "
        f"Python {platform.python_version()}; load average at start: {load}, "
        f"at end: {load_average()}",
        f"- `mc.Pool({args.workers}, start_method={args.start_method!r}, "
        f"max_tasks_per_worker={MAX_TASKS})`, "
        f"`pool.{'map' if args.hold else 'imap'}(soak_task, range(N), "
        f"timeout={TIMEOUT:g}, on_error='collect')`",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
    ]
    if problems:
        lines += ["**FAIL**:", "", *[f"- {p}" for p in problems[:30]], ""]
    else:
        lines += [
            "**PASS**: every item's outcome as expected; restarts within bounds; "
            + ("" if args.hold else f"memory growth under {GROWTH_LIMIT:g}%; ")
            + "no leaked descriptor or process.",
            "",
        ]
    print("\n".join(lines))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
