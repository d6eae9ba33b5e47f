"""What ``progress=True`` costs: workload (a) of run.py (1,000,000 x ``x*x``) on one
warm pool, with and without the bar, alternating, in one run. The bar draws on
stderr; send it to /dev/null to keep the terminal clean.

    .venv/bin/python benchmarks/progress.py 2>/dev/null
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
    plain: list[float] = []
    bar: list[float] = []
    with mc.Pool() as pool:
        pool.map(square, range(100_000))  # warm-up
        for _ in range(repeat):
            for progress, times in ((False, plain), (True, bar)):
                start = time.perf_counter()
                pool.map(square, range(1_000_000), progress=progress)
                times.append(time.perf_counter() - start)
    a, b = statistics.median(plain), statistics.median(bar)
    print(f"median of {repeat}: without the bar {a * 1e3:.1f} ms, with it {b * 1e3:.1f} ms")
    print(f"ratio {b / a:.3f} (target: at most 1.02)")


if __name__ == "__main__":
    main()
