"""Turn-taking between waiting callers and the I/O thread, without processes."""

from __future__ import annotations

import threading
import time

import pytest

import manycore as mc
from helpers import sleep_then, square
from manycore._engine._turns import PollTurns


def _start_io(turns: PollTurns, has_work: list[bool]) -> tuple[threading.Thread, threading.Event]:
    returned = threading.Event()

    def run() -> None:
        turns.io_wait_turn(lambda: has_work[0])
        returned.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, returned


def test_io_thread_polls_at_once_when_work_waits_and_no_caller_drove() -> None:
    turns = PollTurns(grace=0.001, linger=0.0)
    _, returned = _start_io(turns, [True])
    assert returned.wait(5)


def test_io_thread_parks_while_a_caller_drives_and_resumes_when_it_leaves() -> None:
    turns = PollTurns(grace=0.001, linger=0.0)
    turns.enter_driver()
    work = [True]
    _, returned = _start_io(turns, work)
    assert not returned.wait(0.05)
    turns.leave_driver()
    assert returned.wait(5)


def test_parked_io_thread_is_woken_by_new_work() -> None:
    turns = PollTurns(grace=0.001, linger=0.0)
    work = [False]
    _, returned = _start_io(turns, work)
    assert not returned.wait(0.05)
    work[0] = True
    turns.notify_work()
    assert returned.wait(5)


def test_passive_waiter_skips_the_grace_period() -> None:
    turns = PollTurns(grace=60.0, linger=0.0)
    turns.enter_driver()
    turns.leave_driver()  # a caller just drove: the I/O thread would hold back 60 s
    _, returned = _start_io(turns, [True])
    assert not returned.wait(0.05)
    with turns.passive():
        assert returned.wait(5)


def test_close_releases_the_io_thread() -> None:
    turns = PollTurns()
    _, returned = _start_io(turns, [False])
    turns.close()
    assert returned.wait(5)


@pytest.mark.timeout(120)
def test_many_threads_mixing_result_as_completed_and_map(process_pool: mc.Pool) -> None:
    # Waiters that drive, waiters that do not (as_completed), and map runs, all at once.
    from concurrent.futures import as_completed

    errors: list[BaseException] = []

    def driver(k: int) -> None:
        for i in range(150):
            assert process_pool.submit(square, i + k).result(timeout=30) == (i + k) ** 2

    def watcher(_: int) -> None:
        futures = [process_pool.submit(square, i) for i in range(150)]
        got = sorted(f.result() for f in as_completed(futures, timeout=30))
        assert got == [i * i for i in range(150)]

    def mapper(_: int) -> None:
        assert process_pool.map(square, range(2000)) == [i * i for i in range(2000)]
        assert process_pool.submit(sleep_then, 0.01).result(timeout=30) == 0.01

    def guard(fn, k):  # type: ignore[no-untyped-def]
        try:
            fn(k)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=guard, args=(fn, k))
        for k in range(3)
        for fn in (driver, watcher, mapper)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a waiter hung"
    assert not errors, errors
    assert time.monotonic() - started < 90
