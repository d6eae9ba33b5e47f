"""From the moment a batch is handed to a worker: its timeout runs, the worker's
init failures break the pool, and a worker that dies before it read the batch
is no item's failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import psutil
import pytest

import manycore as mc
from conftest import PROCESS_BACKENDS
from handfns import ExitOnLoad, SlowToLoad, init_that_exits, init_that_hangs, nap_then, times_ten

# Longer adversarial cases: `make test-slow` (CI runs it too), not `make test`.
pytestmark = pytest.mark.slow


def _method(backend: tuple[str, str]) -> str:
    return backend[1]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_timeout_counts_an_argument_that_blocks_while_loading(backend: tuple[str, str]) -> None:
    with mc.Pool(2, start_method=_method(backend)) as pool:
        started = time.monotonic()
        out = pool.map(times_ten, [1, SlowToLoad(), 3], timeout=0.5, on_error="collect")
        assert time.monotonic() - started < 10
        assert out[0] == 10 and out[2] == 30
        assert isinstance(out[1], mc.Failure)
        err = out[1].exception
        assert type(err) is mc.TaskTimeout and err.index == 1
        assert pool.map(times_ten, range(4)) == [0, 10, 20, 30]


def test_an_argument_that_blocks_in_a_batch_fails_alone() -> None:
    items: list[object] = list(range(8))
    items[5] = SlowToLoad()
    with mc.Pool(2) as pool:
        out = pool.map(times_ten, items, chunksize=4, timeout=0.5, on_error="collect")
    assert isinstance(out[5], mc.Failure) and type(out[5].exception) is mc.TaskTimeout
    assert out[5].exception.index == 5 and "loading its arguments" in str(out[5].exception)
    assert [o for i, o in enumerate(out) if i != 5] == [x * 10 for x in range(8) if x != 5]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_timeout_counts_an_init_that_never_returns(backend: tuple[str, str]) -> None:
    with mc.Pool(1, start_method=_method(backend), init=init_that_hangs) as pool:
        started = time.monotonic()
        out = pool.map(times_ten, [1, 2], timeout=0.5, on_error="collect")
        assert time.monotonic() - started < 10
        for index, failure in enumerate(out):
            assert isinstance(failure, mc.Failure)
            err = failure.exception
            assert type(err) is mc.TaskTimeout and err.index == index
            assert "init" in str(err)
        closing = time.monotonic()
    # A closing pool lets a starting worker finish its init (multiprocessing.Pool's
    # initializer runs even for a pool closed at once), and kills one whose init
    # never returns once the stop grace (5 s) has passed: bounded, never a hang.
    assert time.monotonic() - closing < 8


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_timeout_kills_a_stopped_worker(backend: tuple[str, str]) -> None:
    with mc.Pool(2, start_method=_method(backend)) as pool:
        assert pool.map(times_ten, range(4)) == [0, 10, 20, 30]
        frozen = pool.pids()[0]
        os.kill(frozen, signal.SIGSTOP)
        try:
            started = time.monotonic()
            out = pool.map(times_ten, range(6), timeout=0.5, on_error="collect")
            assert time.monotonic() - started < 10
        finally:
            try:
                os.kill(frozen, signal.SIGCONT)
            except ProcessLookupError:
                pass
        failed = [o for o in out if isinstance(o, mc.Failure)]
        assert failed and all(type(f.exception) is mc.TaskTimeout for f in failed)
        assert all(o == x * 10 for x, o in enumerate(out) if not isinstance(o, mc.Failure))
        assert frozen not in pool.pids() and len(pool.pids()) == 2
        assert pool.map(times_ten, range(4)) == [0, 10, 20, 30]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_an_init_that_kills_its_worker_breaks_the_pool(backend: tuple[str, str]) -> None:
    with mc.Pool(2, start_method=_method(backend), init=init_that_exits) as pool:
        with pytest.raises(mc.PoolBroken, match=r"init.*exit code 4"):
            pool.map(times_ten, range(10), on_error="collect")
        with pytest.raises(mc.PoolBroken):  # and stays broken: no worker per item
            pool.submit(times_ten, 1).result(timeout=30)
        assert pool.stats().restarts <= 2


def test_workers_that_can_never_start_break_the_pool() -> None:
    # No init: one worker dying as it starts is no one's fault, but a run of them
    # must not be replaced forever.
    pool = mc.Pool(1, shared=ExitOnLoad())
    with pool, pytest.raises(mc.PoolBroken, match=r"in a row died as they started"):
        pool.map(times_ten, range(4), on_error="collect")


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_worker_killed_while_idle_fails_no_item(backend: tuple[str, str]) -> None:
    with mc.Pool(2, start_method=_method(backend)) as pool:
        for round_ in range(20):
            assert pool.map(times_ten, range(8)) == [x * 10 for x in range(8)], round_
            os.kill(pool.pids()[round_ % 2], signal.SIGKILL)
            assert pool.map(times_ten, range(8)) == [x * 10 for x in range(8)], round_


def test_cancel_wakes_a_waiting_result_at_once() -> None:
    with mc.Pool(1) as pool:
        pool.submit(nap_then, 0)  # warm: the worker is up
        hung = pool.submit(nap_then, 1)  # runs for 30 s
        queued = pool.submit(nap_then, 2)  # waits in the worker's pipe
        waiting = [pool.submit(nap_then, 3), pool.submit(nap_then, 4)]  # in the pool
        timer = threading.Timer(0.5, waiting[0].cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(CancelledError):
            waiting[0].result(timeout=20)
        assert time.monotonic() - started < 3
        # No timeout at all: the wait ends too (in a thread, to bound the test).
        outcome: list[object] = []

        def wait() -> None:
            try:
                waiting[1].result()
            except CancelledError as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        assert waiting[1].cancel()
        waiter.join(3)
        assert not waiter.is_alive() and outcome
        assert not hung.done() and not queued.done()
        pool.terminate()


SHM_IDLE_SCRIPT = """
import time
import numpy as np
import manycore as mc

def total(a):
    return float(a.sum())

pool = mc.Pool(2, start_method={method!r})
shared = mc.shared_array((1 << 18,))
assert pool.map(total, [np.ones(1 << 18)] * 4) == [float(1 << 18)] * 4
print(*pool.pids(), flush=True)
time.sleep(60)
"""


def _segments_of(pid: int) -> list[str]:
    return [
        n
        for n in os.listdir("/dev/shm")
        if n.startswith((f"manycore-{pid}n", f"sem.manycore-{pid}n"))
    ]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_idle_workers_remove_a_killed_parents_segments(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    pytest.importorskip("numpy")
    script = tmp_path / "idle_job.py"
    script.write_text(textwrap.dedent(SHM_IDLE_SCRIPT).format(method=_method(backend)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        workers = [psutil.Process(int(pid)) for pid in line.split()]
        assert len(workers) == 2, line + proc.stderr.read()
        time.sleep(0.3)  # the workers are idle, blocked reading their pipes
        assert _segments_of(proc.pid)  # the shared array and reusable argument segments
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs in the parent
        # Not reaped yet: as a zombie it still "exists" for another pool's sweep of
        # dead processes' segments (other tests run on this machine), so only its
        # own workers can remove them within the bound.
        deadline = time.monotonic() + 10
        while _segments_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _segments_of(proc.pid) == []
        while time.monotonic() < deadline and any(_running(w) for w in workers):
            time.sleep(0.05)
        assert not any(_running(w) for w in workers)
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _Proc:
    pid = 0

    def poll(self) -> int | None:
        return None


class _Worker:
    """What overdue() reads of a worker: one timed batch handed at time 0, unread."""

    def __init__(self, runnable: bool, ready: bool = True):
        from manycore._core._batch import Batch
        from manycore._engine._faults import Task

        batch = Batch(times_ten, [1], 0, False, None, timeout=0.5)
        self.inflight = [Task(batch, lambda *_: None, 1, b"", b"", wire_key=7, handed=0.0)]
        self.doom = None
        self.retiring = False
        self.proc = _Proc()
        self._runnable, self._ready = runnable, ready

    def booted(self) -> float:
        return 0.0001

    def taken_at(self, key: int) -> None:
        return None

    def read_slot(self) -> None:
        return None

    def ready(self) -> bool:
        return self._ready

    def runnable(self) -> bool:
        return self._runnable


def test_a_worker_that_only_waits_for_a_cpu_is_not_timed_out() -> None:
    from manycore._engine._faults import overdue

    assert overdue(_Worker(runnable=False), now=0.2) == (None, pytest.approx(0.3, abs=0.01))
    doom, _ = overdue(_Worker(runnable=False), now=0.6)  # stopped, frozen, stuck
    assert doom is not None and doom[0] == "timeout" and doom[3] == "unread"
    assert overdue(_Worker(runnable=True), now=0.6)[0] is None  # only waits for a CPU
    assert overdue(_Worker(runnable=True), now=11.0)[0] is not None  # ... but not forever
    doom, _ = overdue(_Worker(runnable=True, ready=False), now=0.6)  # its init counts
    assert doom is not None and doom[3] == "init"
