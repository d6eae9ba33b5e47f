"""manycore on Spark beside Spark's own calls, in one run, on a local Spark
(``local[--workers]`` on 127.0.0.1, started here and stopped at the end).

Two workloads: ``--items`` tiny items (``x * x``) and ``--sleeps`` items of 1 ms
(``time.sleep(0.001)``). For each:

* manycore: ``mc.Pool(backend="spark", client=spark).map(f, items)``;
* one job per item: ``sc.parallelize([x], 1).map(f).collect()`` from 4 threads,
  on ``--one-by-one`` items only, its time scaled to the whole workload (it grows
  linearly; the table says so);
* hand-chunked: ``sc.parallelize(items, k).map(f).collect()`` for each ``k`` in
  ``--chunks``; the best.

One run each (a warm-up job first). Prints a table and a JSON line.

    .venv/bin/python benchmarks/clusters_spark.py
    .venv/bin/python benchmarks/clusters_spark.py --items 20000 --sleeps 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import manycore as mc


def square(x: int) -> int:
    return x * x


def nap(x: int) -> int:
    time.sleep(0.001)
    return x


def start(workers: int) -> Any:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(f"local[{workers}]")
        .appName("manycore-bench")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def timed(call: Callable[[], object]) -> float:
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


def one_by_one(sc: Any, fn: Callable[[int], int], items: list[int]) -> None:
    def job(x: int) -> list[int]:
        return sc.parallelize([x], 1).map(fn).collect()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(job, items))


def workload(spark: Any, name: str, fn: Callable[[int], int], n: int, args: Any) -> dict[str, Any]:
    sc = spark.sparkContext
    items = list(range(n))
    with mc.Pool(backend="spark", client=spark) as pool:
        pool.map(fn, range(10))  # warm
        manycore = timed(lambda: pool.map(fn, items))
    few = items[: args.one_by_one]
    per_item = timed(lambda: one_by_one(sc, fn, few)) / len(few)
    chunked = {
        k: timed(lambda k=k: sc.parallelize(items, k).map(fn).collect()) for k in args.chunks
    }
    best = min(chunked, key=chunked.__getitem__)
    return {
        "workload": name,
        "items": n,
        "manycore_s": round(manycore, 3),
        "one_job_per_item_s": round(per_item * n, 1),
        "one_job_per_item_measured_on": len(few),
        "chunked_best_s": round(chunked[best], 3),
        "chunked_best_slices": best,
        "chunked_all_s": {k: round(v, 3) for k, v in chunked.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sleeps", type=int, default=2_000)
    parser.add_argument("--one-by-one", type=int, default=100)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 8, 32])
    args = parser.parse_args()
    begin = time.perf_counter()
    spark = start(args.workers)
    startup = time.perf_counter() - begin
    try:
        spark.sparkContext.parallelize([0], 1).map(square).collect()  # warm
        rows = [
            workload(spark, "tiny", square, args.items, args),
            workload(spark, "1 ms", nap, args.sleeps, args),
        ]
    finally:
        spark.stop()
    print(f"local[{args.workers}] start-up: {startup:.1f} s")
    head = f"{'workload':8} {'items':>7} {'manycore':>9} {'1 job/item*':>12} {'chunked best':>13}"
    print(head)
    for r in rows:
        print(
            f"{r['workload']:8} {r['items']:>7} {r['manycore_s']:>8.2f}s "
            f"{r['one_job_per_item_s']:>11.1f}s {r['chunked_best_s']:>8.2f}s "
            f"(k={r['chunked_best_slices']})"
        )
    print(f"* one job per item: measured on {args.one_by_one} items, scaled linearly")
    print(json.dumps({"startup_s": round(startup, 1), "rows": rows}))


if __name__ == "__main__":
    main()
