"""A script's function that reads a large module-level global, called again and again.

The global (``--mb`` MB: a ``bytes`` object or a NumPy array) is made in this
script's ``__main__``; ``f(x)`` reads a few bytes of it. Each runner runs in a
fresh child process of its own (so that its peak memory is its own) and reports:

    one shipment      the reference: the global pickled, sent through a pipe to a
                      warm spawned process and unpickled there (median of 3)
    20 submits        ``[pool.submit(f, i) for i in range(20)]`` and their results,
                      on a warm pool of ``--workers`` workers (warmed with ``abs``)
    map #1, map #2    ``mc.map(f, range(100))`` twice on the default pool (the first
                      call builds the pool), or ``executor.map`` for the executor
    peak memory       the child's peak RSS minus its RSS before it made the global,
                      as a multiple of the global's size

Runners: ``manycore`` (``mc.Pool``, spawn, and the default pool for the maps) and
``ProcessPoolExecutor`` (the platform default start method: on Linux ``fork``, whose
workers inherit the global and never receive it).

    .venv/bin/python benchmarks/globals.py                    # 100 MB, bytes and numpy
    .venv/bin/python benchmarks/globals.py --mb 20 --kinds bytes
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import manycore as mc

DATA: Any = None


def f(x: int) -> int:
    return int(DATA[x % 10]) + x


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make(kind: str, mb: int) -> Any:
    if kind == "bytes":
        return bytes(range(256)) * (mb * 2**20 // 256)
    import numpy as np

    return np.arange(mb * 2**20 // 8, dtype=np.int64)


def _receive(conn: Any) -> None:
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        pickle.loads(data)
        conn.send_bytes(b"ok")


def _one_shipment() -> float:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_receive, args=(theirs,))
    child.start()
    ours.send_bytes(pickle.dumps(1))  # warm: the child is up
    ours.recv_bytes()
    times = []
    for _ in range(3):
        began = time.perf_counter()
        ours.send_bytes(pickle.dumps(DATA, 5))
        ours.recv_bytes()
        times.append(time.perf_counter() - began)
    ours.send_bytes(b"")
    child.join()
    return statistics.median(times)


def _manycore(workers: int) -> dict[str, float]:
    out = {}
    with mc.Pool(workers) as pool:
        pool.submit(abs, 1).result()
        began = time.perf_counter()
        futures = [pool.submit(f, i) for i in range(20)]
        assert [fu.result() for fu in futures] == [f(i) for i in range(20)]
        out["20 submits"] = time.perf_counter() - began
    for n in (1, 2):
        began = time.perf_counter()
        assert mc.map(f, range(100), workers=workers) == [f(i) for i in range(100)]
        out[f"map #{n}"] = time.perf_counter() - began
    mc.shutdown_default_pools()
    return out


def _executor(workers: int) -> dict[str, float]:
    out = {}
    with ProcessPoolExecutor(workers) as pool:
        pool.submit(abs, 1).result()
        began = time.perf_counter()
        futures = [pool.submit(f, i) for i in range(20)]
        assert [fu.result() for fu in futures] == [f(i) for i in range(20)]
        out["20 submits"] = time.perf_counter() - began
        for n in (1, 2):
            began = time.perf_counter()
            assert list(pool.map(f, range(100))) == [f(i) for i in range(100)]
            out[f"map #{n}"] = time.perf_counter() - began
    return out


def _child(runner: str, kind: str, mb: int, workers: int) -> None:
    global DATA
    before = _rss_mb()
    DATA = _make(kind, mb)
    size = len(DATA) if kind == "bytes" else DATA.nbytes
    out = _one_shipment() if runner == "one shipment" else None
    figures = {"one shipment": out} if out is not None else {}
    if runner == "manycore":
        figures = _manycore(workers)
    elif runner == "ProcessPoolExecutor":
        figures = _executor(workers)
    figures["peak memory"] = (_peak_mb() - before) / (size / 2**20)
    print(json.dumps(figures))


def _run(runner: str, kind: str, mb: int, workers: int, repeat: int) -> dict[str, float]:
    """Median of each figure over ``repeat`` fresh children (the peak memory: the
    largest)."""
    command = [sys.executable, __file__, "--child", runner, "--kinds", kind]
    command += ["--mb", str(mb), "--workers", str(workers)]
    runs = []
    for _ in range(repeat):
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["peak memory"] = max(r["peak memory"] for r in runs)
    return out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--kinds", default="bytes,numpy")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="fresh children per runner")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.kinds, args.mb, args.workers)
        return
    print(f"{args.mb} MB global, {args.workers} workers, medians of {args.repeat} runs\n")
    columns = ["global", "runner", "20 submits", "map #1", "map #2", "peak memory"]
    columns.append("20 submits / one shipment")
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for kind in args.kinds.split(","):
        ship = _run("one shipment", kind, args.mb, args.workers, args.repeat)
        print(
            f"| {kind} | one shipment (reference) | {_ms(ship['one shipment'])} | - | - "
            f"| {ship['peak memory']:.2f}x | - |"
        )
        for runner in ("manycore", "ProcessPoolExecutor"):
            got = _run(runner, kind, args.mb, args.workers, args.repeat)
            ratio = got["20 submits"] / ship["one shipment"]
            print(
                f"| {kind} | {runner} | {_ms(got['20 submits'])} | {_ms(got['map #1'])} "
                f"| {_ms(got['map #2'])} | {got['peak memory']:.2f}x | {ratio:.2f}x |"
            )


if __name__ == "__main__":
    main()
