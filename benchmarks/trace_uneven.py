"""Per-item timeline of the uneven workload (g): which worker ran which item, when.

Shows whether an item waited queued behind a long one while another worker was
idle (issue 18 item 1). One run, manycore only; compare makespan with the lower
bound max(sum / workers, longest item).

    PYTHONPATH=$PWD/src python benchmarks/trace_uneven.py [--hog]
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time

import manycore as mc
from manycore._cli._bench.work import calibrate_spin, spin, uneven_ms

WORKERS = 2


def item(n: int) -> tuple[int, float, float]:
    start = time.time()
    spin(n)
    return os.getpid(), start, time.time()


def _hog(stop: threading.Event) -> None:
    # A busy process beside the pool, as in (h); a thread here would hold the GIL.
    import multiprocessing as mp

    p = mp.get_context("fork").Process(target=_spin_until_killed, daemon=True)
    p.start()
    stop.wait()
    p.kill()


def _spin_until_killed() -> None:
    while True:
        pass


def main(argv: list[str]) -> int:
    per_ms = calibrate_spin(0.05) / 50
    durations = uneven_ms(40, 100.0)
    stop = threading.Event()
    if "--hog" in argv:
        threading.Thread(target=_hog, args=(stop,), daemon=True).start()
    with mc.Pool(workers=WORKERS) as pool:
        pool.map(item, [1, 1])  # warm both workers
        t0, cpu0 = time.time(), time.process_time()
        out = pool.map(item, [int(d * per_ms) for d in durations])
        makespan, parent_cpu = time.time() - t0, time.process_time() - cpu0
    stop.set()
    bound = max(sum(durations) / WORKERS, max(durations)) / 1000
    print(f"makespan {makespan:.2f} s, lower bound {bound:.2f} s, parent CPU {parent_cpu:.3f} s")
    pids = sorted({pid for pid, _, _ in out})
    for i, (pid, start, end) in enumerate(out):
        w = pids.index(pid)
        print(f"{i:2d} {durations[i]:6.0f} ms  w{w}  {start - t0:5.2f}-{end - t0:5.2f}")
    for w, pid in enumerate(pids):
        last = max(end for p, _, end in out if p == pid)
        print(f"worker {w} idle from {last - t0:.2f} s")
    print(f"gaps over 20 ms between a worker's items: {_gaps(out, t0)}")
    return 0


def _gaps(out: list[tuple[int, float, float]], t0: float) -> list[tuple[float, float]]:
    """(end, next start) where a worker sat between two of its items."""
    found = []
    for pid in {p for p, _, _ in out}:
        mine = sorted((s, e) for p, s, e in out if p == pid)
        for (_, end), (start, _) in itertools.pairwise(mine):
            if start - end > 0.02:
                found.append((round(end - t0, 2), round(start - t0, 2)))
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
