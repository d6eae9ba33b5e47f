"""What ``checkpoint=`` costs: workload (a) of run.py (1,000,000 x ``x*x``) on one
warm pool, without a checkpoint and with a fresh one (a new file each run: the
cost of storing every item), alternating, in one run, and the same call again
on the full file (everything read back, nothing computed); then workload (b),
2,000 items of about 1 ms each, closer to what checkpoints are for.

    .venv/bin/python benchmarks/checkpoint.py [repeat]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any

import manycore as mc


def square(x: int) -> int:
    return x * x


def busy(x: int) -> int:
    """About a millisecond of pure Python work."""
    total = 0
    for i in range(20_000):
        total += i * x
    return total


def compare(pool: mc.Pool, fn: Any, items: range, repeat: int, folder: str) -> None:
    plain: list[float] = []
    kept: list[float] = []
    again: list[float] = []
    for run in range(repeat):
        start = time.perf_counter()
        pool.map(fn, items)
        plain.append(time.perf_counter() - start)
        path = os.path.join(folder, f"{fn.__name__}-{run}.sqlite")
        start = time.perf_counter()
        pool.map(fn, items, checkpoint=path)
        kept.append(time.perf_counter() - start)
        start = time.perf_counter()
        pool.map(fn, items, checkpoint=path)
        again.append(time.perf_counter() - start)
        os.remove(path)
    a, b, c = (statistics.median(t) for t in (plain, kept, again))
    print(
        f"{len(items):>9,} x {fn.__name__}: median of {repeat}: without a checkpoint "
        f"{a * 1e3:.0f} ms, with one {b * 1e3:.0f} ms (ratio {b / a:.2f}, "
        f"{(b - a) / len(items) * 1e6:.2f} us more per item); resumed with all "
        f"stored {c * 1e3:.0f} ms"
    )


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with mc.Pool() as pool, tempfile.TemporaryDirectory() as folder:
        pool.map(square, range(100_000))  # warm-up
        print(f"{pool.workers} workers")
        compare(pool, square, range(1_000_000), repeat, folder)
        compare(pool, busy, range(2_000), repeat, folder)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
