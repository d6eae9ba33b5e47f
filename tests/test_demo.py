"""The ``manycore`` command: ``manycore demo`` end to end, its arguments and verdicts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from manycore._cli._demo import CpuMeter, DemoError, Row, Workload, measure, verdict

WORKLOAD_ROWS = ("sum of squares", "factorials", "count primes", "downloads")


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``python -m manycore ARGS``; on a hang, fail with every thread's stack."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT below dumps the stacks
    proc = subprocess.Popen(
        [sys.executable, "-m", "manycore", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate()
        pytest.fail(f"manycore {' '.join(args)} hung for {timeout} s\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.timeout(120)
def test_demo_quick_prints_every_workload() -> None:
    proc = run_cli("demo", "--quick")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"os.cpu_count() = {os.cpu_count()}" in out
    assert "manycore.usable_cpus() = " in out
    assert "cold start: " in out
    lines = out.splitlines()
    for name in WORKLOAD_ROWS:
        assert any(line.startswith(name) or f" {name}," in line for line in lines), (name, out)
    downloads = [line for line in lines if " downloads," in line]
    assert len(downloads) == 2, out
    # The GIL-free kernel: on threads and processes, or a line saying why not.
    kernel = [line for line in lines if "Mandelbrot bands" in line]
    assert len(kernel) == 2 or "GIL-free kernel: skipped" in out, out
    assert "threads" in downloads[0] and "processes" in downloads[1], downloads
    header = next(line for line in lines if line.startswith("workload"))
    for column in ("backend", "sequential s", "manycore s", "speedup", "efficiency", "verdict"):
        assert column in header
    # The table is aligned: every row's verdict starts in the same column.
    start = header.index("verdict")
    table = lines[lines.index(header) + 2 : lines.index(header) + 2 + len(WORKLOAD_ROWS) + 1]
    assert all(line[start - 2 : start] == "  " and line[start] != " " for line in table)


@pytest.mark.timeout(120)
def test_demo_with_one_worker() -> None:
    proc = run_cli("demo", "--quick", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "workers: 1 process, 5 threads" in proc.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5"])
def test_bad_workers_is_a_one_line_error(value: str) -> None:
    proc = run_cli("demo", "--workers", value)
    assert proc.returncode == 2
    assert proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    assert "--workers" in errors[0] and "whole number of at least 1" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(60)
def test_help() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout
    proc = run_cli("demo", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--workers" in proc.stdout and "--quick" in proc.stdout


@pytest.mark.timeout(60)
def test_unknown_command_and_missing_command_exit_2() -> None:
    for args in (("frobnicate",), ()):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc
        assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def row(
    backend: str,
    workers: int,
    seq: float,
    par: float,
    *,
    tasks: int = 100,
    cpu: float | None = None,
    others: float | None = None,
) -> Row:
    """A measured row; ``cpu``: the sequential run's CPU seconds (default: all of it)."""
    cpu = seq if cpu is None else cpu
    return Row("w", backend, workers, tasks, seq, cpu, par, others)


def test_verdicts_follow_the_numbers() -> None:
    tiny = row("processes", 2, seq=0.001, par=0.01, tasks=10_000)
    assert verdict(tiny, [tiny]).startswith("parallel does not pay: tasks too small (0.1 ")
    fast = row("processes", 2, seq=2.0, par=1.02)
    assert verdict(fast, [fast]) == "parallel pays: near-linear speedup"
    slow = row("processes", 2, seq=2.0, par=2.0)
    assert verdict(slow, [slow]) == "parallel does not pay: overhead outweighs the gain"
    busy = row("processes", 2, seq=2.0, par=2.0, others=1.0)
    assert "other programs kept 1.0 CPUs busy" in verdict(busy, [busy])
    # The same numbers with a mostly idle sequential run: the work was waiting.
    threads = row("threads", 6, seq=2.0, par=0.35, cpu=0.01)
    procs = row("processes", 2, seq=2.0, par=1.0, cpu=0.01)
    assert verdict(threads, [threads, procs]).startswith("I/O-bound: threads win, 2.9")
    assert verdict(procs, [threads, procs]).startswith("I/O-bound: pays, but only 2 waits")


def test_a_parallel_result_that_differs_is_an_error() -> None:
    def thread_name(_: int) -> str:
        return threading.current_thread().name

    work = Workload("which thread", thread_name, [1, 2], ("threads",))
    with pytest.raises(DemoError, match=r"which thread: manycore\.map on threads returned"):
        measure(work, {"threads": 2}, CpuMeter(None))
