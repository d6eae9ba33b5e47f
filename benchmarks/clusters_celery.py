"""manycore on Celery against Celery used by hand, in one run, on one Redis.

A ``redis-server`` on a free loopback port (or ``--broker``), then:

* Celery by hand: this file's own Celery app (JSON messages, as Celery
  defaults), a worker of it with ``--workers`` processes, and two tasks,
  ``square(x)`` and ``squares(xs)``:
  - one task per item: ``group(square.s(x) for x in items)``. It takes minutes
    for 100,000, so it runs on ``--one-by-one`` items and its time is scaled
    (it grows linearly; the table says so);
  - hand-chunked: ``squares`` on ``--tiny / c`` chunks for each chunk size ``c``
    of ``--chunks`` (a ``group``, as ``square.chunks`` sends): the best is the
    target;
* manycore: ``pool.map(square, items)`` on a ``backend="celery"`` pool with its
  own ``--workers`` worker processes on the same broker.

Both workloads: ``--tiny`` items of ``x * x``, and ``--sleepy`` items that
sleep 1 ms each. Each run once (``--repeat`` rounds: the median).

    .venv/bin/python benchmarks/clusters_celery.py
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import celery
from celery import Celery, group

import manycore as mc

app = Celery("clusters_celery")  # the hand-written side: Celery's defaults (JSON)
app.conf.update(worker_prefetch_multiplier=4, worker_hijack_root_logger=False)


@app.task(name="bench.square")  # type: ignore[untyped-decorator]
def square(x: int) -> int:
    return x * x


@app.task(name="bench.squares")  # type: ignore[untyped-decorator]
def squares(xs: list[int]) -> list[int]:
    return [x * x for x in xs]


@app.task(name="bench.nap")  # type: ignore[untyped-decorator]
def nap(x: int) -> int:
    time.sleep(0.001)
    return x


@app.task(name="bench.naps")  # type: ignore[untyped-decorator]
def naps(xs: list[int]) -> list[int]:
    return [nap(x) for x in xs]


def plain_square(x: int) -> int:
    return x * x


def plain_nap(x: int) -> int:
    time.sleep(0.001)
    return x


def medians(repeat: int, runs: dict[str, Callable[[], Any]]) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def one_by_one(task: Any, items: list[int]) -> list[int]:
    return list(group(task.s(x) for x in items).apply_async().get(timeout=600, interval=0.005))


def chunked(task: Any, items: list[int], size: int) -> list[int]:
    parts = [items[i : i + size] for i in range(0, len(items), size)]
    done = group(task.s(p) for p in parts).apply_async().get(timeout=600, interval=0.005)
    return [y for part in done for y in part]


def start(cmd: list[str]) -> subprocess.Popen[bytes]:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), *sys.path])}
    if os.geteuid() == 0:
        env["C_FORCE_ROOT"] = "1"  # (Celery refuses pickle as root; manycore's workers take it)
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """The process group: TERM, then KILL (the whole group, pool processes too)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def by_hand(args: argparse.Namespace, label: str, one: Any, many: Any) -> dict[str, float]:
    items = list(range(args.tiny if label == "tiny" else args.sleepy))
    few = items[: min(len(items), args.one_by_one)]
    runs: dict[str, Callable[[], Any]] = {"one task per item": lambda: one_by_one(one, few)}
    for size in [int(c) for c in args.chunks.split(",") if int(c) <= len(items)]:
        runs[f"chunks of {size}"] = lambda size=size: chunked(many, items, size)
    out = medians(args.repeat, runs)
    out["one task per item"] *= len(items) / len(few)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=None, help="a Redis URL (default: start one)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiny", type=int, default=100_000)
    parser.add_argument("--sleepy", type=int, default=2_000)
    parser.add_argument("--one-by-one", type=int, default=5_000)
    parser.add_argument("--chunks", default="100,500,2500,12500,50000")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    procs: list[subprocess.Popen[bytes]] = []
    url = args.broker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # (finally: stop the services)
    if url is None:
        port = free_port()
        redis_cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port)]
        procs.append(start([*redis_cmd, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]))
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    try:
        run(url, args, procs)
    finally:
        for proc in reversed(procs):
            stop(proc)


def run(url: str, args: argparse.Namespace, procs: list[subprocess.Popen[bytes]]) -> None:
    app.conf.update(broker_url=url, result_backend=url)
    worker = [sys.executable, "-m", "celery", "-A", "clusters_celery", "-b", url]
    worker += ["--result-backend", url, "worker"]
    procs.append(start([*worker, "-c", str(args.workers), "-l", "WARNING", "--without-gossip"]))
    deadline = time.monotonic() + 60
    while not app.control.inspect(timeout=1).ping():  # (until the worker answers)
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark's Celery worker did not start")
    results = {
        "tiny": by_hand(args, "tiny", square, squares),
        "sleepy": by_hand(args, "sleepy", nap, naps),
    }
    gc.collect()  # (Celery's finished results unsubscribe while Redis is still there)
    app.close()
    stop(procs.pop())
    start_pool = time.perf_counter()
    with mc.Pool(backend="celery", address=url, workers=args.workers) as pool:
        started = time.perf_counter() - start_pool
        for label, fn, n in (("tiny", plain_square, args.tiny), ("sleepy", plain_nap, args.sleepy)):
            items = list(range(n))
            pool.map(fn, items[:1000])  # (warm: the workers import the function once)
            runs = {"manycore": lambda fn=fn, items=items: pool.map(fn, items)}
            results[label].update(medians(args.repeat, runs))
    print(f"Celery {celery.__version__}, broker {url}, {args.workers} worker processes")
    print(f"manycore pool start (its own workers): {started:.2f} s")
    for label, out in results.items():
        n = args.tiny if label == "tiny" else args.sleepy
        print(f"\n{n:,} {'x*x' if label == 'tiny' else 'x 1 ms sleeps'}:")
        for name, seconds in out.items():
            scaled = ""
            if name == "one task per item" and n > args.one_by_one:
                scaled = f" (scaled from {args.one_by_one:,} items)"
            print(f"  {name:<22} {seconds:8.3f} s{scaled}")


if __name__ == "__main__":
    main()
