"""(f) cold start: a pool's construction to its first result, in a fresh interpreter.

A cold start is what a script pays once: nothing is imported yet beyond what it
imported itself, and no helper process (a fork server) is running. So each repeat
runs in a new ``sys.executable`` that starts a thread that stays alive (a parent
that runs threads, where ``fork`` is unsafe), imports manycore, these runners and
the peer's package (outside the timing, for every runner alike), then times the
runner's pool from construction to the first result of ``noop(7)``, its shutdown,
and then a second pool of the same kind the same way: the second pool of a process
may reuse what the first started, and must be no slower. The child prints its
figures as JSON; the repeats go round-robin over the runners.

The trivial call is ``noop`` of the child's own ``__main__`` script, a few lines
written to a temporary directory: fork-based peers find it by name, manycore sends
it by value, and a worker that imports ``__main__`` (spawn, forkserver) imports
only those few lines, as it would a user's small script.
"""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import manycore as mc
from manycore._cli._bench.cpu import tree_cpu
from manycore._cli._bench.measure import Row, Workload
from manycore._cli._bench.runners import COLD_ONLY, RUNNERS, Runner, installed, peer

__all__ = ["CHILD_SCRIPT", "bench_cold", "child_env", "child_main", "cold_runners", "run_child"]

CHILD_TIMEOUT = 120.0  # seconds for one fresh interpreter's two pools

CHILD_SCRIPT = """\
import sys
import threading


def noop(x):
    return x


if __name__ == "__main__":
    # A parent that runs threads: this one lives through both pools.
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    from manycore._cli._bench.cold import child_main

    sys.exit(child_main(noop, sys.argv[1:]))
"""


class ColdError(Exception):
    """A fresh interpreter of (f) failed; the message says how."""


def cold_runners() -> list[type[Runner]]:
    """Every parallel runner, then the rows that only (f) has."""
    return [cls for cls in RUNNERS if cls.parallel] + COLD_ONLY


def cold_start(
    runner_cls: type[Runner], workers: int, noop: Callable[[object], object]
) -> tuple[float, float, float | None]:
    """Seconds from building the pool to the first result, and to shut it down; and
    the CPU seconds the process tree spent until the first result."""
    runner = runner_cls(workers)
    cpu = tree_cpu()
    started = time.perf_counter()
    runner.open()
    try:
        if runner.call(noop, 7) != 7:
            raise RuntimeError("wrong result from the first task")
        first = time.perf_counter()
        after = tree_cpu()
    finally:
        closing = time.perf_counter()
        runner.close()
    spent = after - cpu if cpu is not None and after is not None else None
    return first - started, time.perf_counter() - closing, spent


def child_main(noop: Callable[[object], object], argv: Sequence[str]) -> int:
    """The fresh interpreter's part: ``argv`` is the runner's name and the workers."""
    name, workers = argv[0], int(argv[1])
    runner_cls = next(cls for cls in cold_runners() if cls.name == name)
    if runner_cls.requires:
        peer(runner_cls.requires)  # the peer's import stays outside the timing, as manycore's
    tree_cpu()  # psutil's import too
    threads = threading.active_count()
    first, first_shutdown, first_cpu = cold_start(runner_cls, workers, noop)
    second, second_shutdown, second_cpu = cold_start(runner_cls, workers, noop)
    figures = {
        "live_threads": threads,
        "first": first,
        "first_shutdown": first_shutdown,
        "first_cpu": first_cpu,
        "second": second,
        "second_shutdown": second_shutdown,
        "second_cpu": second_cpu,
    }
    print(json.dumps(figures), flush=True)
    return 0


def child_env() -> dict[str, str]:
    """This environment for the children, with bytecode writing on and this manycore
    first on their path (the one measured here, wherever it was imported from)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    root = str(Path(mc.__file__).resolve().parent.parent)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *rest])
    return env


def run_child(script: Path, name: str, workers: int, env: dict[str, str]) -> dict[str, Any]:
    """One fresh interpreter's figures (see :func:`child_main`)."""
    try:
        done = subprocess.run(
            [sys.executable, str(script), name, str(workers)],
            capture_output=True,
            text=True,
            env=env,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ColdError(f"the fresh interpreter took over {CHILD_TIMEOUT:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ColdError(f"the fresh interpreter exited with {done.returncode}: {last}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def compile_manycore() -> bool:
    """Compile manycore's package to bytecode, as ``pip install`` does; False if that
    failed (a read-only install, say: its imports may then compile from source)."""
    package = Path(mc.__file__).resolve().parent
    try:
        return bool(compileall.compile_dir(str(package), quiet=2))
    except OSError:
        return False


def bytecode_note(compiled: bool, warm_up_rounds: int) -> str:
    unset = "PYTHONDONTWRITEBYTECODE" in os.environ
    how = (
        "compiled with `compileall` before the runs (as `pip install` does)"
        if compiled
        else "**not** compiled (`compileall` failed: its imports may include compiling)"
    )
    return (
        f"- Bytecode: manycore's package was {how}; the fresh interpreters ran with "
        "bytecode writing on"
        + (" (PYTHONDONTWRITEBYTECODE, set here, removed from their environment)" if unset else "")
        + f", after {warm_up_rounds} untimed warm-up round(s), so that every runner "
        "imports from bytecode (the standard library and the installed peers have theirs)."
    )


def bench_cold(
    workers: int,
    repeat: int,
    runners: Sequence[type[Runner]] | None = None,
    warm_up_rounds: int = 1,
) -> Workload:
    """Each repeat of each runner in a fresh interpreter, round-robin; first the
    untimed warm-up rounds (bytecode written, files in the page cache)."""
    chosen = list(runners) if runners is not None else cold_runners()
    title = (
        f"cold start: pool creation to first result, in a fresh process that runs a thread "
        f"(median of {repeat})"
    )
    workload = Workload("f", title, [Row(cls.name) for cls in chosen])
    for cls, row in zip(chosen, workload.rows, strict=True):
        if not installed(cls):
            row.note = f"skipped: {cls.requires} is not installed"
    compiled = compile_manycore()
    env = child_env()
    with tempfile.TemporaryDirectory(prefix="manycore-cold-") as tmp:
        script = Path(tmp) / "cold_start.py"
        script.write_text(CHILD_SCRIPT)
        for i in range(warm_up_rounds + repeat):
            timed = i >= warm_up_rounds
            label = f"round {i - warm_up_rounds + 1} of {repeat}" if timed else "warm-up round"
            print(f"  (f) {label} ...", file=sys.stderr, flush=True)
            for row in workload.rows:
                if not row.note:
                    _one_repeat(script, workers, env, row, record=timed)
    workload.notes.append(bytecode_note(compiled, warm_up_rounds))
    return workload


def _one_repeat(script: Path, workers: int, env: dict[str, str], row: Row, record: bool) -> None:
    """Run one child; record its figures in ``row`` unless it was a warm-up. An error,
    in a warm-up too, becomes the row's note."""
    try:
        figures = run_child(script, row.name, workers, env)
    except (ColdError, ValueError) as exc:
        row.note = f"ERROR: {exc}"
        return
    if not record:
        return
    row.times.append(figures["first"])
    row.second.append(figures["second"])
    row.extra.append(figures["first_shutdown"])
    if figures["first_cpu"] is not None:
        row.cpu.append(figures["first_cpu"])
