"""manycore on IPython parallel against ipyparallel used by hand, in one run.

On one cluster (started here with ``ipyparallel.Cluster``: a controller and
``--workers`` engines on 127.0.0.1; or ``--address`` of a running ``ipcluster``'s
client connection file), two workloads: ``--tiny`` items of ``x * x``, and
``--ms`` items that sleep 1 ms each. Three ways for each:

* one task per item (``view.apply_async`` each, then ``get``): slow, so it runs
  on ``--one-by-one`` items and its time is scaled (it grows linearly; the table
  says so);
* hand-chunked: ``view.map(f, items, chunksize=c)`` for each ``c`` of ``--chunks``
  (``--ms-chunks`` for the 1 ms items); the best of them is the target;
* manycore: ``pool.map(f, items)`` on a ``backend="ipyparallel"`` pool (given
  the same client).

    .venv/bin/python benchmarks/clusters_ipyparallel.py
    .venv/bin/python benchmarks/clusters_ipyparallel.py --address CLIENT_JSON
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import manycore as mc


def square(x: int) -> int:
    return x * x


def nap(x: int) -> int:
    import time  # (ipyparallel's own canning drops a __main__ function's globals)

    time.sleep(0.001)
    return x


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def one_by_one(view: Any, fn: Callable[[int], int], items: list[int]) -> list[int]:
    return [ar.get() for ar in [view.apply_async(fn, x) for x in items]]


def hand_chunked(view: Any, fn: Callable[[int], int], items: list[int], size: int) -> list[int]:
    return list(view.map(fn, items, chunksize=size, block=True))


def workload(
    client: Any, fn: Callable[[int], int], n: int, few: int, chunks: list[int], label: str
) -> None:
    view = client.load_balanced_view()
    items = list(range(n))
    expected = [fn(x) for x in items] if fn is square else items
    with mc.Pool(backend="ipyparallel", client=client) as pool:
        assert pool.map(fn, items[:100]) == expected[:100]  # warm-up
        t_mc = timed(lambda: pool.map(fn, items))
        workers = pool.workers
    chunked = {
        size: timed(lambda size=size: hand_chunked(view, fn, items, size)) for size in chunks
    }
    sample = items[:few]
    t_one = timed(lambda: one_by_one(view, fn, sample)) * (n / len(sample))
    best_size = min(chunked, key=lambda size: chunked[size])
    print(f"\n{label}: {n:,} items, {workers} engines, one run each\n")
    print("| how | time | x manycore |")
    print("|---|---|---|")
    print(f"| manycore `pool.map` | {t_mc:.3f} s | 1.00x |")
    for size, t in chunked.items():
        mark = " (best)" if size == best_size else ""
        print(f"| `view.map`, chunksize={size:,}{mark} | {t:.3f} s | {t / t_mc:.2f}x |")
    scaled = "" if few >= n else f" (measured on {few:,}, scaled)"
    print(f"| one task per item{scaled} | {t_one:.2f} s | {t_one / t_mc:.1f}x |")
    print(f"\nmanycore / best hand-chunked: {t_mc / chunked[best_size]:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=None, help="a client connection file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiny", type=int, default=100_000)
    parser.add_argument("--ms", type=int, default=2_000)
    parser.add_argument("--one-by-one", type=int, default=2_000)
    parser.add_argument("--chunks", default="1000,5000,25000,50000")
    parser.add_argument("--ms-chunks", default="10,50,250,1000")
    args = parser.parse_args(argv)
    import ipyparallel as ipp

    cluster = None
    start = time.perf_counter()
    if args.address is None:
        cluster = ipp.Cluster(n=args.workers, controller_ip="127.0.0.1", log_level=30)
        client = cluster.start_and_connect_sync()
        client.wait_for_engines(args.workers, timeout=120)
    else:
        client = ipp.Client(args.address)
    print(f"cluster ready in {time.perf_counter() - start:.1f} s")
    try:
        chunks = [int(c) for c in args.chunks.split(",")]
        workload(client, square, args.tiny, args.one_by_one, chunks, "tiny x*x")
        ms_chunks = [int(c) for c in args.ms_chunks.split(",")]
        workload(client, nap, args.ms, min(args.ms, args.one_by_one), ms_chunks, "1 ms sleeps")
    finally:
        client.close()
        if cluster is not None:
            cluster.stop_cluster_sync()


if __name__ == "__main__":
    main()
