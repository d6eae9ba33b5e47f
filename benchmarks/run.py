"""Side-by-side benchmarks: manycore against a plain loop and its peers, in one run.

Every workload runs on every runner in the same process, one runner after the
other, with the same number of workers (``manycore.usable_cpus()`` unless
``--workers`` says otherwise):

    (a) 1,000,000 x ``x*x``               (b) 2,000 x ~1 ms of pure-Python work
    (c) 4 x ~0.5 s of pure-Python work    (d) 64 NumPy arrays of 8 MB -> ``a.sum()``
    (e) one ``submit(f, x).result()`` round trip, against a raw ``multiprocessing.Pipe``
    (f) cold start: pool creation to the first result (shutdown reported apart)

Runners: the sequential loop, ``mc.map``, ``mc.Pool``, ``multiprocessing.Pool``,
``concurrent.futures.ProcessPoolExecutor``, joblib (loky) and mpire; a peer that is
not installed is skipped with a note. For (a)-(e) the pools are built and warmed up
outside the timed region. The machine this runs on is usually shared and noisy, so
the report compares ratios taken from the same run.

The suite itself lives in the package (``manycore._cli._bench``; ``manycore bench`` runs
it from an installed manycore). This script runs it with the work functions below,
defined in the script's ``__main__`` as a user's script has them.

    python benchmarks/run.py                     # full run, writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick --only a,e  # smoke run, stdout only
    python benchmarks/run.py --only b --plot /tmp/b.png  # and a bar chart (matplotlib)
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from manycore._cli._bench.work import Work
from manycore._cli._bench_cmd import script_main

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"


# The work functions, in __main__ on purpose: fork-based peers find them by
# reference; manycore and loky send them by value, as they would a user's script's.
def square(x: int) -> int:
    return x * x


def noop(x: Any) -> Any:
    return x


def spin(n: int) -> int:
    """Pure-Python CPU work that holds the GIL; ``n`` loops (calibrated at start)."""
    acc = 0
    for i in range(n):
        acc += i * i % 7
    return acc


def array_sum(a: Any) -> Any:
    return a.sum()


WORK = Work(square, noop, spin, array_sum, "the script's `__main__` (benchmarks/run.py)")


def main(argv: list[str] | None = None) -> int:
    root = DEFAULT_OUTPUT.parent.parent
    python = os.path.relpath(sys.executable, root) if sys.executable else "python"
    args = sys.argv[1:] if argv is None else argv
    command = shlex.join([python, "benchmarks/run.py", *args])
    return script_main(
        argv,
        work=WORK,
        description=(__doc__ or "").splitlines()[0],
        default_output=DEFAULT_OUTPUT,
        command=f"Command (from the repository root): `{command}`",
    )


if __name__ == "__main__":
    sys.exit(main())
