"""The standard library's multiprocessing objects with manycore pools: Manager
proxies as arguments, queues and locks in ``init_args``, and clear refusals of
what cannot travel (a Pipe end as an argument)."""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import manycore as mc
from conftest import PROCESS_BACKENDS
from stdlibfns import (
    flush_log_and_exit,
    log_exit,
    log_init,
    log_task,
    make_pipe_end,
    mark_after,
    send_one,
    signal_init,
    store_square,
)


@pytest.fixture(scope="module")
def manager() -> Iterator[Any]:
    # A spawn context: the manager's server process must not fork this (threaded) one.
    with multiprocessing.get_context("spawn").Manager() as m:
        yield m


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_manager_proxy_as_an_argument(backend: tuple[str, str], manager: Any) -> None:
    shared = manager.dict()
    with mc.Pool(2, start_method=backend[1]) as pool:
        assert pool.map(store_square, [shared] * 4, range(4), timeout=30) == [0, 1, 2, 3]
        assert pool.submit(store_square, shared, 5).result(timeout=30) == 5
    assert dict(shared) == {0: 0, 1: 1, 2: 4, 3: 9, 5: 25}


def test_a_pipe_end_as_an_argument_is_refused_naming_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    here, there = multiprocessing.Pipe()
    with mc.Pool(2) as pool:
        with pytest.raises(mc.SerializationError, match=r"input item 0 of type 'Connection'"):
            pool.map(send_one, [there], timeout=30)
        with pytest.raises(mc.SerializationError, match=r"argument 0 of type 'Connection'.*Pipe"):
            pool.submit(send_one, there)
        with pytest.raises(mc.SerializationError, match=r"keyword argument 'conn'"):
            pool.submit(send_one, conn=there)
        # A result that is a pipe end fails that item alone.
        out = pool.map(make_pipe_end, range(2), on_error="collect", timeout=30)
        assert all(isinstance(o, mc.Failure) for o in out)
        assert "Connection" in str(out[0].exception)
        assert pool.map(abs, [-1, -2], timeout=30) == [1, 2]  # the pool is fine
    assert not here.poll(0)  # nothing was written anywhere
    here.close()
    there.close()
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_string_naming_the_module_still_travels() -> None:
    with mc.Pool(1) as pool:
        text = "multiprocessing.connection"
        assert pool.submit(str.upper, text).result(timeout=30) == text.upper()


@pytest.mark.parametrize(
    ("typecode", "value", "kind"),
    [("i", [1, 2], TypeError), ("i", 2**40, ValueError), ("d", "x", TypeError)],
)
def test_value_that_does_not_fit_its_typecode(typecode: str, value: Any, kind: type) -> None:
    with pytest.raises(kind, match=rf"Value value .* typecode {typecode!r}.*got"):
        mc.Value(typecode, value)
    shared = mc.Value(typecode)
    with pytest.raises(kind, match=r"Value value"):
        shared.value = value
    assert shared.value == 0  # a refused value leaves the old one


# ----------------------------------------------------- objects in init_args


def _lines(log: Any, n: int) -> list[str]:
    return [log.get(timeout=30) for _ in range(n)]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_multiprocessing_queue_in_init_args_collects_worker_logs(
    backend: tuple[str, str],
) -> None:
    log = multiprocessing.get_context("spawn").Queue()
    options = {"init": log_init, "init_args": (log,), "exit": log_exit}
    with mc.Pool(2, start_method=backend[1], **options) as pool:
        assert pool.map(log_task, range(4), timeout=30) == [0, 1, 2, 3]
        pids = set(pool.pids())
    lines = _lines(log, 8)  # the exit lines are flushed before the workers end
    assert sorted(line for line in lines if line.startswith("task")) == [
        f"task {i}" for i in range(4)
    ]
    assert {int(line.split()[1]) for line in lines if line.startswith("init")} == pids
    assert {int(line.split()[1]) for line in lines if line.startswith("exit")} == pids


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_replacement_workers_get_the_queue_too(backend: tuple[str, str]) -> None:
    log = multiprocessing.get_context("spawn").Queue()
    options = {"init": log_init, "init_args": (log,), "max_tasks_per_worker": 1}
    with mc.Pool(1, start_method=backend[1], **options) as pool:
        assert pool.map(log_task, range(3), chunksize=1, timeout=30) == [0, 1, 2]
    inits = [line for line in _lines(log, 6) if line.startswith("init")]
    assert len(set(inits)) == 3  # three workers, one after the other


def test_a_default_context_queue_with_fork_workers() -> None:
    log = multiprocessing.Queue()  # the 'fork' context on Linux before 3.14
    with mc.Pool(2, start_method="fork", init=log_init, init_args=(log,)) as pool:
        pool.map(log_task, range(2), timeout=30)
        pids = set(pool.pids())
    lines = _lines(log, 4)
    assert {int(line.split()[1]) for line in lines if line.startswith("init")} == pids


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_event_value_and_pipe_end_in_init_args(backend: tuple[str, str]) -> None:
    ctx = multiprocessing.get_context("spawn")
    event, value = ctx.Event(), ctx.Value("i", 0)
    here, there = ctx.Pipe()
    options = {"init": signal_init, "init_args": (event, value, there)}
    with mc.Pool(2, start_method=backend[1], **options) as pool:
        assert pool.map(abs, [-1, -2], timeout=30) == [1, 2]
        pids = set(pool.pids())
    assert event.wait(30)
    assert value.value == 2
    assert {here.recv() for _ in range(2) if here.poll(30)} == pids


@pytest.mark.skipif("fork" not in mc.START_METHODS, reason="needs fork")
@pytest.mark.parametrize("method", [m for m in ("spawn", "forkserver") if m in mc.START_METHODS])
def test_a_fork_context_queue_with_spawned_workers_is_refused_clearly(method: str) -> None:
    log = multiprocessing.get_context("fork").Queue()
    with pytest.raises(mc.SerializationError, match=r"init_args .* 'fork' context.*get_context"):
        mc.Pool(2, start_method=method, init=log_init, init_args=(log,))


@pytest.mark.slow
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_an_exit_that_takes_more_than_a_second_finishes(
    backend: tuple[str, str], tmp_path: Path
) -> None:
    # The pool's close hangs up the task pipe at once: that must not end a worker
    # still in exit() (nor flushing a queue it put into) while the parent lives.
    marker = tmp_path / "exit-done"
    slow_exit = functools.partial(mark_after, str(marker), 1.5)
    with mc.Pool(1, start_method=backend[1], exit=slow_exit) as pool:
        (pid,) = pool.pids()
        assert pool.map(abs, [-1]) == [1]
    assert marker.read_text() == str(pid)


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_worker_replaced_after_a_crash_gets_the_queue(backend: tuple[str, str]) -> None:
    log = multiprocessing.get_context("spawn").Queue()
    with mc.Pool(1, start_method=backend[1], init=log_init, init_args=(log,)) as pool:
        (first,) = pool.pids()
        assert log.get(timeout=30) == f"init {first}"
        # It dies once its feeder thread is done: one that dies while the feeder
        # writes leaves the queue's lock held and the pipe torn (multiprocessing's
        # own limit, docs/errors.md), and no later line could come through.
        with pytest.raises(mc.WorkerCrashed):
            pool.submit(flush_log_and_exit, 3).result(timeout=30)
        assert pool.map(log_task, range(2), timeout=30) == [0, 1]
        (second,) = pool.pids()
        lines = set()
        while "task 1" not in lines:  # read while the pool runs, as docs/errors.md advises
            lines.add(log.get(timeout=30))
    assert second != first and f"init {second}" in lines and "task 0" in lines
