"""manycore against a separately started cluster, beside the engine's own calls, in one run.

For each engine (``--engines``; an engine is a class below, started as a user starts
it: for Dask, a ``dask scheduler`` and ``--workers`` ``dask worker`` processes of one
thread each on 127.0.0.1; for Ray, a runtime of ``--workers`` CPUs (``ray.init``); or
the cluster at ``--address``), ``--items`` tiny items (``x * x``):

* manycore: ``mc.Pool(backend=engine, address=...).map(square, items)``;
* one task per item: the engine's own (``client.map``; ``f.remote`` each), on
  ``--one-by-one`` items, its time scaled to ``--items`` (it grows linearly; the
  table says so);
* hand-chunked native: the items cut into ``k`` equal chunks, one task each
  (``client.map(square_chunk, chunks)``; ``square_chunk.remote`` each), for each
  ``k`` in ``--chunks``; and the same with each chunk pickled by hand (Dask passes
  bytes through, but looks into lists, in the arguments and results, element by
  element: slow); the best.

Times are medians of ``--repeat`` runs, round-robin over the runners; beside each,
the CPU time (user + system) of the whole process tree (this process and the
cluster's processes that it started) over those runs, per run.

    .venv/bin/python benchmarks/clusters.py
    .venv/bin/python benchmarks/clusters.py --items 20000 --repeat 3
    .venv/bin/python benchmarks/clusters.py --engines ray --address 127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

import manycore as mc

_ROOT = Path(__file__).resolve().parent.parent


def square(x: int) -> int:
    return x * x


def square_chunk(xs: list[int]) -> list[int]:
    return [x * x for x in xs]


def square_pickled(blob: bytes) -> bytes:
    return pickle.dumps([x * x for x in pickle.loads(blob)], 5)


class Engine:
    """One engine's runners; ``pids()`` are the cluster processes to count CPU for."""

    name = ""

    def pool_options(self) -> dict[str, Any]:
        raise NotImplementedError

    def one_by_one(self, items: list[int]) -> list[int]:
        raise NotImplementedError

    def chunked(self, chunks: list[list[int]]) -> list[int]:
        raise NotImplementedError

    def chunked_pickled(self, chunks: list[list[int]]) -> list[int]:
        """The same, each chunk pickled by hand: the engine moves bytes."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        return []


class DaskEngine(Engine):
    name = "dask"

    def __init__(self, address: str, pids: list[int]):
        import distributed

        self.address = address
        self._pids = pids
        self.client = distributed.Client(address, set_as_default=False)

    def pool_options(self) -> dict[str, Any]:
        return {"backend": "dask", "address": self.address}

    def one_by_one(self, items: list[int]) -> list[int]:
        return list(self.client.gather(self.client.map(square, items, pure=False)))

    def chunked(self, chunks: list[list[int]]) -> list[int]:
        parts = self.client.gather(self.client.map(square_chunk, chunks, pure=False))
        return [y for part in parts for y in part]

    def chunked_pickled(self, chunks: list[list[int]]) -> list[int]:
        blobs = [pickle.dumps(chunk, 5) for chunk in chunks]
        parts = self.client.gather(self.client.map(square_pickled, blobs, pure=False))
        return [y for part in parts for y in pickle.loads(part)]

    def pids(self) -> list[int]:
        return self._pids


@contextmanager
def dask_cluster(workers: int, address: str | None) -> Iterator[Engine]:
    """The cluster at ``address``, or one started here as separate processes."""
    if address is not None:
        engine = DaskEngine(address, [])
        try:
            yield engine
        finally:
            engine.client.close()
        return
    dask = str(Path(sys.executable).parent / "dask")
    src = Path(mc.__file__).resolve().parent.parent  # the manycore this process runs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(_ROOT)])}
    with tempfile.TemporaryDirectory() as tmp:
        file = str(Path(tmp) / "scheduler.json")
        common = {"env": env, "start_new_session": True, "stderr": subprocess.DEVNULL}
        scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", "0"]
        scheduler += ["--dashboard-address", "127.0.0.1:0", "--scheduler-file", file]
        worker = [dask, "worker", "--scheduler-file", file, "--nthreads", "1"]
        worker += ["--host", "127.0.0.1"]
        procs = [subprocess.Popen(scheduler, **common)]  # type: ignore[call-overload]
        try:
            while not Path(file).exists():
                time.sleep(0.1)
            time.sleep(0.2)
            for _ in range(workers):
                procs.append(subprocess.Popen(worker, **common))  # type: ignore[call-overload]
            address = json.loads(Path(file).read_text())["address"]
            engine = DaskEngine(address, [p.pid for p in procs])
            engine.client.wait_for_workers(workers, timeout=60)
            try:
                yield engine
            finally:
                engine.client.close()
        finally:
            for proc in procs:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


class RayEngine(Engine):
    name = "ray"

    def __init__(self, ray: Any):
        self.ray = ray
        options = {"max_retries": 0}
        self._one = ray.remote(**options)(square)
        self._chunk = ray.remote(**options)(square_chunk)
        self._pickled = ray.remote(**options)(square_pickled)

    def pool_options(self) -> dict[str, Any]:
        return {"backend": "ray"}  # the runtime this process initialised

    def one_by_one(self, items: list[int]) -> list[int]:
        return list(self.ray.get([self._one.remote(x) for x in items]))

    def chunked(self, chunks: list[list[int]]) -> list[int]:
        parts = self.ray.get([self._chunk.remote(chunk) for chunk in chunks])
        return [y for part in parts for y in part]

    def chunked_pickled(self, chunks: list[list[int]]) -> list[int]:
        blobs = [pickle.dumps(chunk, 5) for chunk in chunks]
        parts = self.ray.get([self._pickled.remote(blob) for blob in blobs])
        return [y for part in parts for y in pickle.loads(part)]

    def pids(self) -> list[int]:
        return [p.pid for p in psutil.Process().children()]  # the runtime ray.init started


@contextmanager
def ray_runtime(workers: int, address: str | None) -> Iterator[Engine]:
    """The head at ``address``, or a runtime of ``workers`` CPUs started here."""
    import ray

    src = Path(mc.__file__).resolve().parent.parent  # the manycore this process runs
    env = {"PYTHONPATH": os.pathsep.join([str(src), str(_ROOT)])}
    kwargs: dict[str, Any] = {"log_to_driver": False, "runtime_env": {"env_vars": env}}
    if address is None:
        kwargs.update(num_cpus=workers, include_dashboard=False)
    else:
        kwargs["address"] = address
    ray.init(**kwargs)
    try:
        yield RayEngine(ray)
    finally:
        ray.shutdown()


ENGINES: dict[str, Callable[[int, str | None], Any]] = {"dask": dask_cluster, "ray": ray_runtime}


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of this process, ``pids`` and their descendants."""
    total = 0.0
    procs = [psutil.Process()]
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(
    runners: dict[str, Callable[[], list[int]]], repeat: int, pids: list[int], want: list[int]
) -> dict[str, tuple[float, float]]:
    """Median wall time and mean CPU time of each runner, round-robin."""
    walls: dict[str, list[float]] = {name: [] for name in runners}
    cpus: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeat):
        for name, run in runners.items():
            cpu, start = tree_cpu(pids), time.perf_counter()
            out = run()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(tree_cpu(pids) - cpu)
            assert out == want[: len(out)], f"{name}: wrong results"
    return {n: (statistics.median(walls[n]), statistics.mean(cpus[n])) for n in runners}


SUMMARY: list[str] = []  # one line per engine: the two targets


def bench_engine(name: str, args: argparse.Namespace) -> list[str]:
    items = list(range(args.items))
    want = [x * x for x in items]
    few = items[: args.one_by_one]
    scale = args.items / len(few)
    with (
        ENGINES[name](args.workers, args.address) as engine,
        mc.Pool(**engine.pool_options()) as pool,
    ):
        pool.map(square, range(1000))  # warm-up: functions sent, workers warm
        engine.chunked([[1, 2]] * 4)
        engine.one_by_one(list(range(100)))
        runners: dict[str, Callable[[], list[int]]] = {"manycore": lambda: pool.map(square, items)}
        for k in args.chunks:
            size = -(-len(items) // k)
            chunks = [items[i : i + size] for i in range(0, len(items), size)]
            runners[f"native, {k} chunks"] = lambda chunks=chunks: engine.chunked(chunks)
            runners[f"native, {k} pickled chunks"] = lambda chunks=chunks: engine.chunked_pickled(
                chunks
            )
        times = measure(runners, args.repeat, engine.pids(), want)
        one = measure({"one": lambda: engine.one_by_one(few)}, 1, engine.pids(), want)["one"]
    best = min((k for k in times if k.startswith("native")), key=lambda k: times[k][0])
    mc_wall = times["manycore"][0]
    SUMMARY.append(
        f"{name}: manycore / best hand-chunked = {mc_wall / times[best][0]:.2f} (target <= 1.5); "
        f"one task per item / manycore = {one[0] * scale / mc_wall:.0f} (target >= 100)"
    )
    rows = [
        f"| {name} | manycore `pool.map` | {mc_wall:.3f} s | {times['manycore'][1]:.2f} s | "
        f"{mc_wall / times[best][0]:.2f}x the best native |"
    ]
    for k, (wall, cpu) in times.items():
        if k != "manycore":
            mark = " (best)" if k == best else ""
            rows.append(f"| {name} | {k}{mark} | {wall:.3f} s | {cpu:.2f} s | |")
    rows.append(
        f"| {name} | one task per item (on {len(few):,}, scaled) | {one[0] * scale:.2f} s | "
        f"{one[1] * scale:.2f} s | manycore {one[0] * scale / mc_wall:.0f}x faster |"
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--address", default=None, help="a running cluster (one engine)")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--one-by-one", type=int, default=10_000)
    parser.add_argument("--chunks", default="2,4,8,16,64")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    args.chunks = [int(k) for k in args.chunks.split(",")]
    rows = []
    for name in args.engines.split(","):
        try:
            rows += bench_engine(name, args)
        except ImportError as exc:
            print(f"{name}: skipped ({exc})")
    load = os.getloadavg()[0]
    print(
        f"\n{args.items:,} x `x*x`; workers: {args.workers}; medians of {args.repeat}; "
        f"load average at the end: {load:.2f}\n"
    )
    print("| engine | runner | wall (median) | CPU of the process tree, per run | |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n" + "\n".join(SUMMARY))


if __name__ == "__main__":
    main()
