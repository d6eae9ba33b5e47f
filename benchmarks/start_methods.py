"""Cold start to first result, per start method, in a parent that runs a thread.

Each case runs in a fresh interpreter (nothing warm: no fork server, no imports
beyond the parent's own) that starts a background thread, then times building a
2-worker pool and getting one result from it, twice (the first and the second
pool of the process), and the wall and CPU time of the whole thing. Medians of
``--repeat`` fresh processes.

    python benchmarks/start_methods.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_CASE = r"""
import json, os, sys, threading, time
stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()  # a parent that runs threads
kind = sys.argv[1]
import manycore as mc
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

def make():
    if kind == "ProcessPoolExecutor":
        return ProcessPoolExecutor(2)
    if kind.startswith("ProcessPoolExecutor/"):
        return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(kind.split("/")[1]))
    method = None if kind == "manycore default" else kind.split("/")[1]
    return mc.Pool(2, start_method=method)

out = []
for _ in range(2):
    started = time.perf_counter()
    pool = make()
    assert pool.submit(abs, -7).result() == 7
    out.append(time.perf_counter() - started)
    pool.shutdown(wait=True)
print(json.dumps(out))
"""

CASES = [
    "manycore default",
    "manycore/spawn",
    "manycore/forkserver",
    "manycore/fork",
    "ProcessPoolExecutor",
    "ProcessPoolExecutor/forkserver",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[list[float]]] = {case: [] for case in CASES}
    for _ in range(args.repeat):  # round-robin: load drifts fall on every case alike
        for case in CASES:
            done = subprocess.run(
                [sys.executable, "-c", _CASE, case], capture_output=True, text=True, check=True
            )
            results[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| case | first pool (ms) | second pool (ms) |")
    print("|---|---|---|")
    for case, runs in results.items():
        first, second = (statistics.median(col) * 1e3 for col in zip(*runs, strict=True))
        print(f"| {case} | {first:.1f} | {second:.1f} |")


if __name__ == "__main__":
    main()
