"""GIL-free kernel on threads: a compiled kernel that releases the GIL, run as a
loop, on manycore threads and processes, and on ThreadPoolExecutor, in one run.

The kernel is the Mandelbrot band of ``manycore demo`` (src/manycore/_cli/_mandel.py),
compiled with Pythran (the ``pythran`` extra; compiled once into ~/.cache/manycore,
never into the tree), else vectorised with NumPy. Each runner's pool is started
and warmed before it is timed; the runners take turns (round-robin) for
``--repeats`` rounds and each row shows the median wall time and the CPU time of
the whole process tree (the parent and its worker processes), with ratios to
the loop from the same run.

    python benchmarks/gilfree.py                  # pythran if installed, else numpy
    python benchmarks/gilfree.py --kernel numpy --repeats 5
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import manycore as mc
from manycore._cli._kernel import band, load

Runner = Callable[[list[int]], list[int]]
Timings = dict[str, list[tuple[float, float]]]  # runner: (wall, CPU) of each repeat


def tree_cpu() -> float:
    """CPU seconds of this process and its live descendants (psutil), else its own."""
    try:
        import psutil
    except ImportError:
        return time.process_time()
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def runners(fn: Callable[[int], int], workers: int, stack: ExitStack) -> dict[str, Runner]:
    threads = stack.enter_context(mc.Pool(workers, backend="threads"))
    procs = stack.enter_context(mc.Pool(workers, backend="processes"))
    tpe = stack.enter_context(ThreadPoolExecutor(workers))
    return {
        "sequential loop": lambda xs: [fn(x) for x in xs],
        f"manycore threads ({workers})": lambda xs: threads.map(fn, xs),
        f"manycore threads ({workers}), chunksize=1": lambda xs: threads.map(fn, xs, chunksize=1),
        f"manycore processes ({workers})": lambda xs: procs.map(fn, xs),
        f"ThreadPoolExecutor ({workers})": lambda xs: list(tpe.map(fn, xs)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--kernel", choices=("pythran", "numpy"), default=None)
    ap.add_argument("--bands", type=int, default=64)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--maxiter", type=int, default=300)
    ap.add_argument("--workers", type=int, default=mc.usable_cpus())
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    kernel = load(pythran=args.kernel != "numpy", say=print)
    if kernel is None or (args.kernel and kernel.name != args.kernel):
        print("no such kernel: pip install numpy (pythran too, compiled)", file=sys.stderr)
        return 2
    fn = functools.partial(
        band, bands=args.bands, width=args.width, maxiter=args.maxiter, kind=kernel.name
    )
    items = list(range(args.bands))
    expected = [fn(x) for x in items]
    times: Timings = {}
    with ExitStack() as stack:
        table = runners(fn, args.workers, stack)
        for run in table.values():  # start and warm every pool
            run(items[: args.workers])
        for _ in range(args.repeats):
            for name, run in table.items():
                c0, w0 = tree_cpu(), time.perf_counter()
                got = run(items)
                wall, cpu = time.perf_counter() - w0, tree_cpu() - c0
                if got != expected:
                    raise SystemExit(f"{name}: wrong result")
                times.setdefault(name, []).append((wall, cpu))
    report(kernel.name, args, times)
    return 0


def report(
    kind: str, args: argparse.Namespace, times: dict[str, list[tuple[float, float]]]
) -> None:
    load1 = os.getloadavg()[0]
    print(
        f"{kind} kernel, {args.bands} bands of a {args.width}x{args.width} Mandelbrot, "
        f"maxiter {args.maxiter}; {mc.usable_cpus()} usable CPUs, load average {load1:.2f}; "
        f"median of {args.repeats}, round-robin"
    )
    seq_wall = statistics.median(w for w, _ in next(iter(times.values())))
    print("| runner | wall s | speedup | CPU s (tree) | walls (all repeats) |")
    print("|---|---|---|---|---|")
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        every = " ".join(f"{w:.3f}" for w, _ in runs)
        print(f"| {name} | {wall:.3f} | {seq_wall / wall:.2f}x | {cpu:.3f} | {every} |")


if __name__ == "__main__":
    sys.exit(main())
