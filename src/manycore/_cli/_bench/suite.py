"""The suite: its sizes, and which workloads run."""

from __future__ import annotations

import importlib.util
import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import manycore as mc
from manycore._cli._bench.cold import bench_cold
from manycore._cli._bench.measure import Workload, bench_latency, bench_map, same
from manycore._cli._bench.work import ALL_WORKLOADS, Array, Work, hog, uneven_ms

__all__ = ["ALL_WORKLOADS", "DEFAULT_REPEAT", "QUICK", "Sizes", "run_workloads"]


@dataclass(frozen=True)
class Sizes:
    squares: int = 1_000_000
    ms_tasks: int = 2_000
    long_tasks: int = 4
    long_seconds: float = 0.5
    arrays: int = 64
    array_len: int = 1_000_000  # float64: 8 MB each
    round_trips: int = 2_000
    uneven_tasks: int = 40
    uneven_mean_ms: float = 100.0
    cold_warm_up_rounds: int = 1  # (f): untimed fresh interpreters per runner first


QUICK = Sizes(
    squares=100_000,
    ms_tasks=200,
    long_seconds=0.1,
    arrays=8,
    round_trips=300,
    uneven_mean_ms=20,
    cold_warm_up_rounds=0,
)
DEFAULT_REPEAT = {"a": 5, "b": 3, "c": 3, "d": 5, "f": 5, "g": 5, "h": 5}


def run_workloads(
    only: str, sizes: Sizes, workers: int, repeat: int | None, loops_per_ms: int, work: Work
) -> dict[str, Workload]:
    """Run the workloads named in ``only`` (letters from :data:`ALL_WORKLOADS`)."""

    def rep(key: str) -> int:
        return repeat or DEFAULT_REPEAT[key]

    out: dict[str, Workload] = {}
    if "a" in only:
        out["a"] = bench_map(
            "a",
            f"{sizes.squares:,} x `x*x` over `range({sizes.squares:,})`",
            work.square,
            range(sizes.squares),
            workers,
            rep("a"),
        )
    if "b" in only:
        out["b"] = bench_map(
            "b",
            f"{sizes.ms_tasks:,} x ~1 ms of pure-Python work",
            work.spin,
            [loops_per_ms] * sizes.ms_tasks,
            workers,
            rep("b"),
        )
    if "c" in only:
        loops = round(loops_per_ms * sizes.long_seconds * 1000)
        out["c"] = bench_map(
            "c",
            f"{sizes.long_tasks} x ~{sizes.long_seconds} s of pure-Python work",
            work.spin,
            [loops] * sizes.long_tasks,
            workers,
            rep("c"),
        )
    for key in "gh":
        if key in only:
            out[key] = bench_uneven(key, sizes, workers, rep(key), loops_per_ms, work)
    if "d" in only:
        out["d"] = bench_arrays(sizes, workers, rep("d"), work.array_sum)
    if "e" in only:
        out["e"] = bench_latency(workers, sizes.round_trips, work.noop)
    if "f" in only:
        out["f"] = bench_cold(workers, rep("f"), warm_up_rounds=sizes.cold_warm_up_rounds)
    return out


def bench_uneven(
    key: str, sizes: Sizes, workers: int, repeat: int, loops_per_ms: int, work: Work
) -> Workload:
    """(g): items of uneven, heavy-tailed durations; (h): the same with a CPU hog
    process beside the pool (a machine that other programs load)."""
    durations = uneven_ms(sizes.uneven_tasks, sizes.uneven_mean_ms)
    loops = [max(1, round(loops_per_ms * ms)) for ms in durations]
    title = (
        f"{sizes.uneven_tasks} x pure-Python work of uneven duration (lognormal, seed 18: "
        f"mean {sizes.uneven_mean_ms:g} ms, longest {max(durations):.0f} ms)"
    )
    if key == "g":
        return bench_map(key, title, work.spin, loops, workers, repeat)
    with cpu_hog() as hog_pid:
        return bench_map(
            key,
            title + ", with a CPU hog process running beside it",
            work.spin,
            loops,
            workers,
            repeat,
            skip={hog_pid},
        )


@contextmanager
def cpu_hog() -> Iterator[int]:
    """One process that spins, outside the pool, while the block runs; its pid."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    proc = context.Process(target=hog, args=(stop,), daemon=True)
    proc.start()
    try:
        yield proc.pid or 0
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def bench_arrays(
    sizes: Sizes, workers: int, repeat: int, array_sum: Callable[[Array], object]
) -> Workload:
    mb = sizes.array_len * 8 / 1e6
    title = f"{sizes.arrays} NumPy float64 arrays of {mb:.0f} MB → `a.sum()`"
    if importlib.util.find_spec("numpy") is None:
        return Workload("d", title, notes=["skipped: numpy is not installed"])
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = [rng.random(sizes.array_len) for _ in range(sizes.arrays)]
    workload = bench_map("d", title, array_sum, arrays, workers, repeat)
    workload.notes += shared_array_notes(arrays, workers, repeat, array_sum)
    return workload


def shared_array_notes(
    arrays: list[Array], workers: int, repeat: int, array_sum: Callable[[Array], object]
) -> list[str]:
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
