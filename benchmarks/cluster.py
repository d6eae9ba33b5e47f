"""manycore on Dask and Ray against the same engine used one task per item, in one run.

For each engine that is installed (a ``distributed.LocalCluster`` of N single-threaded
worker processes; ``ray.init(num_cpus=N)``), on the same cluster:

* tiny: ``--tiny`` items of ``x * x``: submitted one by one (``client.submit`` /
  ``f.remote``, then gathered), against ``mc.map(..., backend=engine)``;
* 1 ms: ``--spins`` items of ~1 ms of pure-Python work each, the same two ways, and a
  plain loop in this process for reference.

One-by-one submission of 100,000 tasks takes minutes on these engines, so it runs on
``--one-by-one`` items (default 20,000) and its time is scaled to ``--tiny`` items
(it grows linearly; the table says so).

    .venv/bin/python benchmarks/cluster.py
    .venv/bin/python benchmarks/cluster.py --engines dask --tiny 20000
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import manycore as mc


def square(x: int) -> int:
    return x * x


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def loops_per_ms() -> int:
    n = 10_000
    best = min(_timed(spin, n) for _ in range(5))
    return max(1, int(n / (best * 1000)))


def _timed(fn: Callable[[int], Any], arg: int) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


@contextlib.contextmanager
def dask_engine(workers: int) -> Iterator[tuple[Callable[..., list[Any]], dict[str, Any]]]:
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):

        def one_by_one(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
            futures = [client.submit(fn, x, pure=False) for x in items]
            return list(client.gather(futures))

        yield one_by_one, {"backend": "dask", "client": client}


@contextlib.contextmanager
def ray_engine(workers: int) -> Iterator[tuple[Callable[..., list[Any]], dict[str, Any]]]:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote: dict[Any, Any] = {}

        def one_by_one(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
            f = remote.setdefault(fn, ray.remote(fn))
            return list(ray.get([f.remote(x) for x in items]))

        yield one_by_one, {"backend": "ray"}
    finally:
        ray.shutdown()


ENGINES = {"dask": dask_engine, "ray": ray_engine}


def best_of(repeat: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_engine(name: str, args: argparse.Namespace, per_ms: int) -> list[str]:
    rows = []
    tiny = list(range(args.tiny))
    few = list(range(args.one_by_one))
    spins = [per_ms] * args.spins
    with ENGINES[name](args.workers) as (one_by_one, options), mc.Pool(**options) as pool:
        assert pool.map(square, range(100)) == [x * x for x in range(100)]  # warm-up
        one_by_one(square, list(range(100)))
        t_one = best_of(1, lambda: one_by_one(square, few)) * (args.tiny / args.one_by_one)
        t_mc = best_of(args.repeat, lambda: pool.map(square, tiny))
        assert pool.map(square, tiny[:1000]) == [x * x for x in range(1000)]
        rows.append(
            f"| {name} | {args.tiny:,} x `x*x` | {t_one:.2f} s (measured on "
            f"{args.one_by_one:,}, scaled) | {t_mc:.3f} s | {t_one / t_mc:.0f}x |"
        )
        s_one = best_of(1, lambda: one_by_one(spin, spins))
        s_mc = best_of(args.repeat, lambda: pool.map(spin, spins))
        s_seq = best_of(args.repeat, lambda: [spin(n) for n in spins])
        rows.append(
            f"| {name} | {args.spins:,} x ~1 ms | {s_one:.2f} s | {s_mc:.3f} s | "
            f"{s_one / s_mc:.1f}x (plain loop here: {s_seq:.2f} s) |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="dask,ray")
    parser.add_argument("--workers", type=int, default=mc.usable_cpus())
    parser.add_argument("--tiny", type=int, default=100_000)
    parser.add_argument("--one-by-one", type=int, default=20_000)
    parser.add_argument("--spins", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    per_ms = loops_per_ms()
    rows = []
    for name in args.engines.split(","):
        try:
            rows += bench_engine(name, args, per_ms)
        except ImportError as exc:
            print(f"{name}: skipped ({exc})")
    print(f"\nworkers: {args.workers}; manycore times: median of {args.repeat}\n")
    print("| engine | workload | one task per item | manycore `mc.map` | manycore faster by |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
