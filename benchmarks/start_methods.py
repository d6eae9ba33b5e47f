"""Cold start to first result, per start method, in a parent that runs a thread.

Each case runs in a fresh interpreter (nothing warm: no fork server, no imports
beyond the parent's own) that starts a background thread, then times building a
2-worker pool and getting one result from it, twice (the first and the second
pool of the process), and the CPU time of the process tree to the first result.
Medians of ``--repeat`` fresh processes, round-robin over the cases, after one
untimed warm-up round. As in the suite's (f), manycore's package is compiled to
bytecode first and the children run with bytecode writing on: with
PYTHONDONTWRITEBYTECODE set, every fresh interpreter would compile manycore from
source (tens of ms that no installed manycore pays), while the standard library
has its bytecode.

    python benchmarks/start_methods.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from manycore._cli._bench.cold import child_env, compile_manycore

_CASE = r"""
import json, os, sys, threading, time
stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()  # a parent that runs threads
kind = sys.argv[1]
import manycore as mc
from manycore._cli._bench.cpu import tree_cpu
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
    cpu = tree_cpu()
    started = time.perf_counter()
    pool = make()
    assert pool.submit(abs, -7).result() == 7
    out.append(time.perf_counter() - started)
    after = tree_cpu()
    out.append(after - cpu if cpu is not None and after is not None else float("nan"))
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
    if not compile_manycore():
        print("warning: compiling manycore failed; its imports may compile", file=sys.stderr)
    env = child_env()
    results: dict[str, list[list[float]]] = {case: [] for case in CASES}
    for i in range(1 + args.repeat):  # round-robin: load drifts fall on every case alike
        for case in CASES:
            done = subprocess.run(
                [sys.executable, "-c", _CASE, case],
                capture_output=True,
                text=True,
                check=True,
                env=env,
                timeout=120,
            )
            if i:  # the first round is a warm-up: bytecode written, files cached
                results[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        "| case | first pool (ms) | CPU of the tree to its first result (ms) | second pool (ms) |"
    )
    print("|---|---|---|---|")
    for case, runs in results.items():
        first, cpu, second, _ = (statistics.median(col) * 1e3 for col in zip(*runs, strict=True))
        print(f"| {case} | {first:.1f} | {cpu:.1f} | {second:.1f} |")


if __name__ == "__main__":
    main()
