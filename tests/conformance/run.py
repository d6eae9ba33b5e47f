"""Run every ``tests/conformance/*_suite.py`` (``make conformance``): each is a
harness that runs a standard's own test suite against a manycore facade.

A suite is a script: exit 0 when it passed, 1 when it failed, 77 when it could
not run here (its test package is not installed), printing why. Adding a file
named ``<name>_suite.py`` is all it takes to have it run here. With
``--required`` (CI), a suite that could not run fails the run.

    python tests/conformance/run.py [--required] [--timeout SECONDS] [NAME ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIPPED = 77


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--required", action="store_true", help="a skipped suite fails")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per suite")
    parser.add_argument("names", nargs="*", help="suites to run (default: all)")
    args = parser.parse_args(argv)
    suites = sorted(HERE.glob("*_suite.py"))
    if args.names:
        suites = [s for s in suites if s.stem.removesuffix("_suite") in args.names]
    verdicts = [(suite.stem, run(suite, args.timeout)) for suite in suites]
    print("\n=== conformance suites ===")
    failed = False
    for name, status in verdicts:
        word = {0: "passed", SKIPPED: "skipped"}.get(status, f"FAILED (exit {status})")
        print(f"  {name}: {word}")
        failed |= status not in (0, SKIPPED) or (status == SKIPPED and args.required)
    return 1 if failed or not verdicts else 0


def run(suite: Path, timeout: float) -> int:
    print(f"\n=== {suite.name} ===", flush=True)
    started = time.monotonic()
    # A session of its own: on timeout the suite goes with every process it started.
    child = subprocess.Popen([sys.executable, str(suite)], start_new_session=True)
    try:
        status = child.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_group(child.pid)
        child.wait()
        print(f"{suite.name} ran past {timeout:.0f} s: stopped")
        status = 124
    # What the suite left running (loky's reusable workers and resource trackers
    # outlive joblib_suite) goes with it: the next suite gets the CPUs.
    stop_group(child.pid)
    print(f"=== {suite.name}: exit {status} after {time.monotonic() - started:.0f} s ===")
    return status


def stop_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing of the suite's is left


if __name__ == "__main__":
    sys.exit(main())
