"""submit() futures are standard concurrent.futures futures. The Pool is not an
Executor (its map returns a list, its timeout limits each item): mc.Executor is."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor, as_completed, wait

import pytest

import manycore as mc
from helpers import get_state, getpid, set_state, sleep_then, square


def test_pool_is_not_an_executor(pool: mc.Pool) -> None:
    # Code written for an Executor must get Executor behaviour: that is mc.Executor.
    assert not isinstance(pool, Executor)
    assert issubclass(mc.Executor, Executor)
    assert pool.submit(square, 12).result(timeout=30) == 144


def test_kwargs(pool: mc.Pool) -> None:
    assert pool.submit(int, "ff", base=16).result(timeout=30) == 255


def test_as_completed_and_wait(pool: mc.Pool) -> None:
    futures = [pool.submit(square, i) for i in range(20)]
    assert sorted(f.result() for f in as_completed(futures, timeout=30)) == [
        i * i for i in range(20)
    ]
    done, not_done = wait(futures, timeout=30)
    assert len(done) == 20 and not not_done


def test_asyncio_wrap_future(pool: mc.Pool) -> None:
    async def main() -> list[int]:
        futs = [asyncio.wrap_future(pool.submit(square, i)) for i in range(5)]
        return list(await asyncio.gather(*futs))

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_done_callback_that_raises_does_not_break_the_pool(
    pool: mc.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_callback(_: object) -> None:
        raise RuntimeError("callback failed")

    fut = pool.submit(square, 3)
    fut.add_done_callback(bad_callback)
    assert fut.result(timeout=30) == 9
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_cancel_pending_future(process_pool: mc.Pool) -> None:
    blockers = [process_pool.submit(sleep_then, 0.5) for _ in range(4)]  # fill both workers
    queued = process_pool.submit(square, 5)
    assert queued.cancel()
    assert queued.cancelled()
    assert [b.result(timeout=30) for b in blockers] == [0.5] * 4


def test_shutdown_cancel_pending(backend: tuple[str, str | None]) -> None:
    name, method = backend
    if name == "serial":
        pytest.skip("serial runs each task inside submit(): nothing is ever pending")
    pool = mc.Pool(1, backend=name, start_method=method)
    running = pool.submit(sleep_then, 0.3)
    time.sleep(0.1)
    queued = [pool.submit(square, i) for i in range(5)]
    pool.shutdown(wait=True, cancel_pending=True)
    assert running.result(timeout=30) == 0.3
    assert all(f.cancelled() for f in queued[1:])


def test_shutdown_waits_for_running_work(pool: mc.Pool) -> None:
    futures = [pool.submit(sleep_then, 0.05) for _ in range(4)]
    pool.shutdown(wait=True)
    assert all(f.done() for f in futures)


def test_pool_used_from_several_threads(pool: mc.Pool) -> None:
    errors: list[BaseException] = []
    results: dict[int, list[int]] = {}

    def work(k: int) -> None:
        try:
            results[k] = pool.map(square, range(k * 100, k * 100 + 100))
            assert pool.submit(square, k).result(timeout=30) == k * k
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for k in range(6):
        assert results[k] == [x * x for x in range(k * 100, k * 100 + 100)]


def test_init_runs_in_every_worker(backend: tuple[str, str | None]) -> None:
    name, method = backend
    with mc.Pool(2, backend=name, start_method=method, init=set_state, init_args=("ready",)) as p:
        assert set(p.map(get_state, range(20))) == {"ready"}


def test_process_workers_are_separate_processes(process_pool: mc.Pool) -> None:
    import os

    pids = set(process_pool.map(getpid, range(200), chunksize=1))
    assert os.getpid() not in pids
    assert pids <= set(process_pool.pids())


def test_pool_works_while_parent_runs_threads(backend: tuple[str, str | None]) -> None:
    # A parent busy with threads holding locks must still start working pools.
    name, method = backend
    lock = threading.Lock()
    stop = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            with lock:
                time.sleep(0.001)

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with mc.Pool(2, backend=name, start_method=method) as p:
            assert p.map(square, range(50)) == [x * x for x in range(50)]
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_terminate_kills_running_work(process_pool: mc.Pool) -> None:
    import concurrent.futures

    running = process_pool.submit(sleep_then, 30)
    time.sleep(0.2)
    started = time.monotonic()
    process_pool.terminate()
    assert time.monotonic() - started < 10
    with pytest.raises(concurrent.futures.CancelledError):
        running.result(timeout=10)
    with pytest.raises(mc.PoolClosed):
        process_pool.submit(square, 1)


def test_exit_does_not_wait_for_a_hung_task(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    code = (
        "import threading, time, manycore as mc\n"
        "threading.Thread(target=mc.map, args=(time.sleep, [60, 60]), daemon=True).start()\n"
        "time.sleep(1.0)\n"
        "print('leaving', flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
