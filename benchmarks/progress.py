"""What watching a map costs: workload (a) of run.py (1,000,000 x ``x*x``) on one
warm pool, plain, with ``progress=True`` and with ``stats=True``, alternating, in
one run. The bar draws on stderr; send it to /dev/null to keep the terminal clean.

    .venv/bin/python benchmarks/progress.py 2>/dev/null

Targets: the bar at most 2% slower than plain. ``stats=True`` times every item
(two clock reads each), which is most of a 100 ns item: its ratio is reported,
not held to a target (without it, stats are kept per batch, for nothing).
"""

from __future__ import annotations

import statistics
import sys
import time

import manycore as mc


def square(x: int) -> int:
    return x * x


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    runs: dict[str, list[float]] = {"plain": [], "progress": [], "stats": []}
    with mc.Pool() as pool:
        pool.map(square, range(100_000))  # warm-up
        for _ in range(repeat):
            for kind, times in runs.items():
                start = time.perf_counter()
                pool.map(
                    square,
                    range(1_000_000),
                    progress=kind == "progress",
                    stats=kind == "stats",
                )
                times.append(time.perf_counter() - start)
    plain = statistics.median(runs["plain"])
    print(f"median of {repeat}, {pool.workers} workers: plain {plain * 1e3:.1f} ms")
    for kind in ("progress", "stats"):
        median = statistics.median(runs[kind])
        print(f"  {kind}=True {median * 1e3:.1f} ms, ratio {median / plain:.3f}")
    print("target: progress ratio at most 1.02")


if __name__ == "__main__":
    main()
