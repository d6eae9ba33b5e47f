"""Task-graph scheduling overhead: manycore's ``@mc.task`` against Dask (and Ray).

The graph: ``--leaves`` tiny tasks (``inc(i)``), summed in groups of 100 by
``add_all`` tasks, then one final ``add_all``: 10,101 tasks by default, each doing
almost nothing, so the time measured is the scheduler's. Each runner builds the
graph from scratch and waits for the final value; the time covers both. Pools
and clusters are started (and warmed up with a small graph) outside the timing.

Runners (same number of workers for all, where the runner has workers):

* manycore tasks on ``Pool(backend="threads")``, on ``Pool()`` (processes,
  spawn) and on ``Pool(backend="serial")`` (one thread, no parallelism);
* Dask ``delayed`` on its local schedulers: ``"threads"``, ``"processes"`` and
  ``"sync"``; and on a ``distributed.LocalCluster`` (processes), if installed;
* Ray remote functions (``ray.init(num_cpus=N)``), if installed.

    .venv/bin/python benchmarks/graphs.py                 # prints a markdown table
    .venv/bin/python benchmarks/graphs.py --leaves 2000   # a smaller graph
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import manycore as mc

GROUP = 100


def inc(x: int) -> int:
    return x + 1


def add_all(xs: list[int]) -> int:
    return sum(xs)


def expected(leaves: int) -> int:
    return sum(range(1, leaves + 1))


def tasks_in(leaves: int) -> int:
    return leaves + -(-leaves // GROUP) + 1


# ------------------------------------------------------------------ runners


def manycore_runner(backend: str, workers: int) -> Iterator[Callable[[int], int]]:
    with mc.Pool(workers, backend=backend) as pool:
        t_inc, t_add = mc.task(pool=pool)(inc), mc.task(pool=pool)(add_all)

        def run(leaves: int) -> int:
            parts = [t_inc(i) for i in range(leaves)]
            groups = [t_add(parts[i : i + GROUP]) for i in range(0, leaves, GROUP)]
            return t_add(groups).result(timeout=600)

        yield run


def dask_runner(scheduler: str, workers: int) -> Iterator[Callable[[int], int]]:
    import dask

    d_inc, d_add = dask.delayed(inc, pure=False), dask.delayed(add_all, pure=False)

    def run(leaves: int) -> int:
        parts = [d_inc(i) for i in range(leaves)]
        groups = [d_add(parts[i : i + GROUP]) for i in range(0, leaves, GROUP)]
        value: int = d_add(groups).compute(scheduler=scheduler, num_workers=workers)
        return value

    yield run


def distributed_runner(workers: int) -> Iterator[Callable[[int], int]]:
    import dask
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        d_inc, d_add = dask.delayed(inc, pure=False), dask.delayed(add_all, pure=False)

        def run(leaves: int) -> int:
            parts = [d_inc(i) for i in range(leaves)]
            groups = [d_add(parts[i : i + GROUP]) for i in range(0, leaves, GROUP)]
            value: int = client.compute(d_add(groups)).result()
            return value

        yield run


def ray_runner(workers: int) -> Iterator[Callable[[int], int]]:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        r_inc, r_add = ray.remote(inc), ray.remote(lambda *xs: sum(xs))

        def run(leaves: int) -> int:
            parts = [r_inc.remote(i) for i in range(leaves)]
            groups = [r_add.remote(*parts[i : i + GROUP]) for i in range(0, leaves, GROUP)]
            value: int = ray.get(r_add.remote(*groups))
            return value

        yield run
    finally:
        ray.shutdown()


def runners(workers: int) -> list[tuple[str, Callable[[], Iterator[Callable[[int], int]]]]]:
    out: list[tuple[str, Callable[[], Iterator[Callable[[int], int]]]]] = [
        ("manycore tasks, threads", lambda: manycore_runner("threads", workers)),
        ("manycore tasks, processes", lambda: manycore_runner("processes", workers)),
        ("manycore tasks, serial", lambda: manycore_runner("serial", 1)),
    ]
    with contextlib.suppress(ImportError):
        import dask  # noqa: F401

        for scheduler in ("threads", "processes", "sync"):
            out.append((f"dask.delayed, {scheduler}", lambda s=scheduler: dask_runner(s, workers)))
    with contextlib.suppress(ImportError):
        import distributed  # noqa: F401

        out.append(("dask.distributed LocalCluster", lambda: distributed_runner(workers)))
    with contextlib.suppress(ImportError):
        import ray  # noqa: F401

        out.append(("ray", lambda: ray_runner(workers)))
    return out


def measure(
    make: Callable[[], Iterator[Callable[[int], int]]], leaves: int, repeat: int
) -> list[float]:
    times = []
    gen = make()
    run = next(gen)
    try:
        assert run(200) == expected(200)  # warm-up: workers started, code loaded
        for _ in range(repeat):
            start = time.perf_counter()
            value = run(leaves)
            times.append(time.perf_counter() - start)
            assert value == expected(leaves), (value, expected(leaves))
    finally:
        gen.close()
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=mc.usable_cpus())
    parser.add_argument("--only", default="", help="run only runners whose name contains this")
    args = parser.parse_args(argv)
    n = tasks_in(args.leaves)
    print(
        f"graph: {args.leaves:,} inc + {n - args.leaves - 1} add_all + 1 = {n:,} tasks; "
        f"workers: {args.workers}; median of {args.repeat}\n"
    )
    rows: list[tuple[str, float]] = []
    for name, make in runners(args.workers):
        if args.only not in name:
            continue
        times = measure(make, args.leaves, args.repeat)
        rows.append((name, statistics.median(times)))
        print(f"  {name}: {', '.join(f'{t:.3f}' for t in times)} s", flush=True)
    reference = rows[0][1] if rows else 1.0
    print("\n| runner | median | tasks per second | x manycore threads |")
    print("|---|---|---|---|")
    for name, median in rows:
        print(f"| {name} | {median:.3f} s | {n / median:,.0f} | {median / reference:.2f}x |")


if __name__ == "__main__":
    main()
