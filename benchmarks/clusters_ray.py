"""manycore on Ray against Ray used by hand, for many tiny items, in one run.

On one Ray runtime (``ray.init(num_cpus=N)``, or ``--address`` of a head started
with ``ray start --head``), three ways to compute ``x * x`` for ``--tiny`` items:

* one task per item (``f.remote(x)`` each, then ``ray.get``): it takes minutes for
  100,000, so it runs on ``--one-by-one`` items and its time is scaled (it grows
  linearly; the table says so);
* hand-chunked: a remote function over a list, called on ``--tiny / c`` chunks
  for each chunk size ``c`` of ``--chunks``: the best of them is the target;
* manycore: ``pool.map(square, items)`` on a ``backend="ray"`` pool.

manycore and the chunk sizes run in turn, ``--repeat`` rounds; each one's median.

    .venv/bin/python benchmarks/clusters_ray.py
    .venv/bin/python benchmarks/clusters_ray.py --address 127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import manycore as mc


def square(x: int) -> int:
    return x * x


def squares(xs: list[int]) -> list[int]:
    return [x * x for x in xs]


def medians(repeat: int, runs: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Each run's median time, the runs taken in turn in each round: a machine
    whose load drifts weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def hand_chunked(ray: Any, items: list[int], size: int) -> list[int]:
    remote = ray.remote(squares)
    parts = ray.get([remote.remote(items[i : i + size]) for i in range(0, len(items), size)])
    return [y for part in parts for y in part]


def one_by_one(ray: Any, items: list[int]) -> list[int]:
    remote = ray.remote(square)
    return list(ray.get([remote.remote(x) for x in items]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=None, help="a running head (default: start one)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiny", type=int, default=100_000)
    parser.add_argument("--one-by-one", type=int, default=20_000)
    parser.add_argument("--chunks", default="500,1000,2500,5000,12500,25000,50000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    import ray

    if args.address is None:
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=args.address, log_to_driver=False)
    try:
        run(ray, args)
    finally:
        ray.shutdown()


def run(ray: Any, args: argparse.Namespace) -> None:
    items = list(range(args.tiny))
    expected = squares(items)
    with mc.Pool(backend="ray") as pool:
        assert pool.map(square, items) == expected  # warm-up: workers started
        assert hand_chunked(ray, items, 5000) == expected
        one_by_one(ray, list(range(200)))
        runs: dict[str, Callable[[], Any]] = {"mc": lambda: pool.map(square, items)}
        for size in map(int, args.chunks.split(",")):
            runs[str(size)] = lambda size=size: hand_chunked(ray, items, size)
        times = medians(args.repeat, runs)
        t_mc = times.pop("mc")
        chunked = {int(size): t for size, t in times.items()}
        few = items[: args.one_by_one]
        t_one = medians(1, {"one": lambda: one_by_one(ray, few)})["one"] * (args.tiny / len(few))
    best_size = min(chunked, key=lambda size: chunked[size])
    best = chunked[best_size]
    print(f"\nworkers: {pool.workers}; medians of {args.repeat}; {args.tiny:,} x `x*x`\n")
    print("| how | time | x manycore |")
    print("|---|---|---|")
    print(f"| manycore `pool.map` | {t_mc:.3f} s | 1.00x |")
    for size, t in chunked.items():
        mark = " (best)" if size == best_size else ""
        print(f"| hand-chunked, {size:,} per task{mark} | {t:.3f} s | {t / t_mc:.2f}x |")
    print(
        f"| one task per item (measured on {len(few):,}, scaled) | {t_one:.2f} s | "
        f"{t_one / t_mc:.0f}x |"
    )
    print(f"\nmanycore / best hand-chunked: {t_mc / best:.2f} (target <= 1.5)")
    print(f"one task per item / manycore: {t_one / t_mc:.0f} (target >= 100)")


if __name__ == "__main__":
    main()
