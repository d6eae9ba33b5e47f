"""Side-by-side benchmarks: manycore against a plain loop and its peers, in one run.

The suite, its workloads and runners are described in the package, which holds them
(``manycore._cli._bench``; ``manycore bench`` runs it from an installed manycore).
This script runs it with the work functions in the script's ``__main__``, as a user's
script has them, and writes ``benchmarks/RESULTS.md``.

    python benchmarks/run.py                     # full run, writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick --only a,e  # smoke run, stdout only
    python benchmarks/run.py --only b --plot /tmp/b.png  # and a bar chart (matplotlib)
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from manycore._cli._bench.work import PACKAGE_WORK
from manycore._cli._bench_cmd import script_main

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"


# The work functions are the package's, remade in __main__ on purpose: fork-based
# peers find them by reference; manycore and loky send them by value, as they would a
# user's script's.
WORK = PACKAGE_WORK.remade_in(globals(), "the script's `__main__` (benchmarks/run.py)")


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
