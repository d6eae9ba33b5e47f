"""Ctrl-C in the parent, and the parent's sudden death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from conftest import PROCESS_BACKENDS

SCRIPT = """
import sys, time
import manycore as mc

def slow(x):
    time.sleep(30)
    return x

print("ready", flush=True)
try:
    {call}
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise
"""

CALLS = {
    "map": "mc.map(slow, range(10), workers=2, start_method={method!r})",
    "imap": "list(mc.imap(slow, range(10), workers=2, start_method={method!r}))",
    "pool": (
        "with mc.Pool(2, start_method={method!r}) as pool:\n        pool.map(slow, range(10))"
    ),
}


def _start(
    tmp_path: Path, call: str, method: str
) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT).format(call=CALLS[call].format(method=method)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 20
    while len(_workers_of(parent)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the workers are inside slow() now
    # (With "forkserver", the fork server is a child too: it goes with the rest.)
    workers = parent.children(recursive=True)
    if len(_workers_of(parent)) != 2:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"expected 2 workers, found {workers}")
    return proc, workers


def _workers_of(parent: psutil.Process) -> list[psutil.Process]:
    # The workers are the leaves: with "forkserver" the server sits between.
    return [p for p in parent.children(recursive=True) if not p.children()]


def _gone_within(workers: list[psutil.Process], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_ctrl_c_stops_everything_within_a_second(
    tmp_path: Path, call: str, backend: tuple[str, str]
) -> None:
    proc, workers = _start(tmp_path, call, backend[1])
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < 1.0, err
    assert "interrupted" in out
    assert "KeyboardInterrupt" in err  # re-raised to the top
    assert proc.returncode != 0
    assert _gone_within(workers, 1.0), [w.pid for w in workers if w.is_running()]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path, backend: tuple[str, str]) -> None:
    proc, workers = _start(tmp_path, "map", backend[1])
    proc.kill()  # SIGKILL: no cleanup code runs in the parent
    proc.communicate(timeout=10)
    assert _gone_within(workers, 5.0), [w.pid for w in workers if w.is_running()]


SHM_SCRIPT = """
import os, time
import numpy as np
import manycore as mc

def total(a):
    return float(a.sum())

def crash(a):
    os._exit(5)

def slow(a):
    time.sleep(30)
    return a

out = mc.shared_array((1 << 20,))
arrays = [np.ones(1 << 18) for _ in range(8)]
with mc.Pool(2, start_method={method!r}) as pool:
    for _ in range(5):
        assert pool.map(total, arrays) == [float(1 << 18)] * 8
    try:
        pool.map(crash, arrays[:2])
    except mc.WorkerCrashed:
        pass
    print("ready", flush=True)
    pool.map(slow, arrays)
"""


def _segments_of(pid: int) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"manycore-{pid}n")]


@pytest.mark.parametrize("how", ["interrupt", "kill"])
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_no_segment_left_after_crash_and_interrupt(
    tmp_path: Path, backend: tuple[str, str], how: str
) -> None:
    pytest.importorskip("numpy")
    script = tmp_path / "shm_job.py"
    script.write_text(textwrap.dedent(SHM_SCRIPT).format(method=backend[1]))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    time.sleep(0.5)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert _segments_of(proc.pid)  # the shared array and the arguments in flight
    if how == "interrupt":
        proc.send_signal(signal.SIGINT)
    else:
        proc.kill()
    proc.communicate(timeout=10)
    assert _gone_within(workers, 5.0)
    deadline = time.monotonic() + 5
    while _segments_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _segments_of(proc.pid) == []
    for w in workers:
        assert _segments_of(w.pid) == []
