"""Bad input fails at once with a clear message; task failures arrive as themselves."""

from __future__ import annotations

import threading

import pytest

import manycore as mc
from helpers import OddError, crash_on, fail_on, failing_init, raise_odd, raise_system_exit, square


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_must_be_positive(workers: int) -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        mc.Pool(workers)
    with pytest.raises(ValueError, match="workers"):
        mc.map(square, [1], workers=workers)


@pytest.mark.parametrize("workers", [1.5, "2", True])
def test_workers_must_be_int(workers: object) -> None:
    with pytest.raises(TypeError, match="workers must be a whole number"):
        mc.Pool(workers)  # type: ignore[arg-type]


def test_fn_must_be_callable(backend: tuple[str, str | None]) -> None:
    name, method = backend
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        mc.map(5, [1], backend=name, start_method=method)  # type: ignore[arg-type]


def test_submit_fn_must_be_callable(pool: mc.Pool) -> None:
    with pytest.raises(TypeError, match="fn must be callable"):
        pool.submit("not a function")  # type: ignore[arg-type]


def test_unknown_backend_lists_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"'asyncio', 'celery', 'dask', 'ipyparallel', 'mpi', 'processes', 'ray', "
        r"'serial', 'spark', 'threads'",
    ):
        mc.map(square, [1], backend="gpu")
    with pytest.raises(ValueError, match=r"backend='gpu' is not a known backend; choose one of"):
        mc.Pool(backend="gpu")


def test_bad_start_method() -> None:
    with pytest.raises(ValueError, match="start_method='teleport'"):
        mc.Pool(start_method="teleport")
    with pytest.raises(ValueError, match="applies only to backend='processes'"):
        mc.Pool(backend="threads", start_method="spawn")


@pytest.mark.parametrize("chunksize", [0, -3])
def test_bad_chunksize(pool: mc.Pool, chunksize: int) -> None:
    with pytest.raises(ValueError, match="chunksize must be at least 1"):
        pool.map(square, [1], chunksize=chunksize)


def test_non_iterable_input(pool: mc.Pool) -> None:
    with pytest.raises(TypeError, match=r"map\[0\] must be iterable"):
        pool.map(square, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="at least one iterable"):
        pool.map(square)


def test_ordered_must_be_bool(pool: mc.Pool) -> None:
    with pytest.raises(TypeError, match="ordered must be True or False"):
        pool.map(square, [1], ordered="yes")  # type: ignore[arg-type]


def test_unpicklable_argument_is_named(process_pool: mc.Pool) -> None:
    with pytest.raises(mc.SerializationError, match="argument 1 of type 'lock'"):
        process_pool.submit(square, 1, threading.Lock())
    with pytest.raises(mc.SerializationError, match="keyword argument 'key' of type 'lock'"):
        process_pool.submit(square, 1, key=threading.Lock())
    with pytest.raises(mc.SerializationError, match=r"cannot pickle input item 2 of type 'lock'"):
        process_pool.map(square, [1, 2, threading.Lock()], chunksize=1)
    assert process_pool.map(square, [3]) == [9]  # the pool is still fine


def test_unpicklable_function_is_named(process_pool: mc.Pool) -> None:
    lock = threading.Lock()
    with pytest.raises(mc.SerializationError, match="cannot pickle the function"):
        process_pool.map(lambda x: (lock, x), [1])


def test_task_error_keeps_type_cause_and_index(pool: mc.Pool) -> None:
    with pytest.raises(ValueError, match="bad input 7") as info:
        pool.map(fail_on, range(20))
    exc = info.value
    assert "manycore: raised while processing input item 7" in exc.__notes__
    if pool.backend_name == "processes":
        assert isinstance(exc.__cause__, mc.RemoteTraceback)
        assert "fail_on" in exc.__cause__.tb_text
        assert "run_batch" not in exc.__cause__.tb_text


def test_imap_yields_results_before_the_failure(pool: mc.Pool) -> None:
    got = []
    with pytest.raises(ValueError):
        for value in pool.imap(fail_on, range(20), chunksize=1):
            got.append(value)
    assert got == list(range(7))


def test_submit_error(pool: mc.Pool) -> None:
    fut = pool.submit(fail_on, 7)
    with pytest.raises(ValueError, match="bad input 7"):
        fut.result(timeout=30)


def test_exception_that_cannot_be_rebuilt(process_pool: mc.Pool) -> None:
    with pytest.raises(mc.RemoteError, match="OddError: x/y") as info:
        process_pool.submit(raise_odd, 1).result(timeout=30)
    assert info.value.type_name.endswith("OddError")
    assert "raise_odd" in str(info.value.__cause__)
    assert OddError  # the original type exists in the parent, but could not be rebuilt


def test_system_exit_in_task_fails_only_that_item(backend: tuple[str, str | None]) -> None:
    name, method = backend
    if name == "serial":
        pytest.skip("serial runs inline: SystemExit is the caller's own")
    with mc.Pool(2, backend=name, start_method=method) as pool:
        with pytest.raises(SystemExit):
            pool.submit(raise_system_exit, 1).result(timeout=30)
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_worker_crash_fails_only_its_item(process_pool: mc.Pool) -> None:
    before = set(process_pool.pids())
    with pytest.raises(mc.WorkerCrashed, match=r"exit code 7.*input item 3") as info:
        process_pool.map(crash_on, range(10), chunksize=5)
    assert info.value.exitcode == 7
    assert info.value.index == 3
    # The pool healed: a fresh worker replaced the dead one, and work goes on.
    assert process_pool.map(square, range(10)) == [x * x for x in range(10)]
    after = set(process_pool.pids())
    assert len(after) == 2 and after != before


def test_crash_in_a_chunk_recomputes_innocent_items(process_pool: mc.Pool) -> None:
    results = list(process_pool.imap(crash_on, [0, 1, 2], chunksize=3))
    assert results == [0, 10, 20]
    with pytest.raises(mc.WorkerCrashed):
        list(process_pool.imap(crash_on, [0, 1, 2, 3, 4], chunksize=5))


def test_submit_crash(process_pool: mc.Pool) -> None:
    fut = process_pool.submit(crash_on, 3)
    with pytest.raises(mc.WorkerCrashed, match="exit code 7"):
        fut.result(timeout=30)
    assert process_pool.submit(square, 4).result(timeout=30) == 16


def test_failing_init_breaks_the_pool(backend: tuple[str, str | None]) -> None:
    name, method = backend
    pool = mc.Pool(2, backend=name, start_method=method, init=failing_init)
    try:
        with pytest.raises(mc.PoolBroken) as info:
            pool.submit(square, 2).result(timeout=30)
        err = info.value
        chain = [err, err.__cause__, getattr(err.__cause__, "__cause__", None)]
        assert any("init exploded" in str(e) for e in chain if e is not None)
    finally:
        pool.shutdown()


def test_init_must_be_callable() -> None:
    with pytest.raises(TypeError, match="init must be callable"):
        mc.Pool(init=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="init_args must be a tuple"):
        mc.Pool(init=print, init_args=5)  # type: ignore[arg-type]


def test_closed_pool_refuses_work(pool: mc.Pool) -> None:
    pool.shutdown()
    with pytest.raises(mc.PoolClosed):
        pool.submit(square, 1)
    with pytest.raises(mc.PoolClosed):
        pool.map(square, [1])
    pool.shutdown()  # twice is fine


def test_error_tree() -> None:
    for cls in (
        mc.PoolClosed,
        mc.PoolBroken,
        mc.WorkerCrashed,
        mc.SerializationError,
        mc.RemoteError,
    ):
        assert issubclass(cls, mc.ManycoreError)
    assert issubclass(mc.SerializationError, TypeError)


def test_broken_errors_are_the_standard_librarys_too() -> None:
    """Code written for concurrent.futures catches manycore's broken-pool errors."""
    from concurrent.futures import BrokenExecutor
    from concurrent.futures.process import BrokenProcessPool

    assert issubclass(mc.PoolBroken, BrokenExecutor)
    assert issubclass(mc.WorkerCrashed, BrokenProcessPool)
    assert issubclass(mc.WorkerCrashed, BrokenExecutor)
    for cls in (mc.PoolBroken, mc.WorkerCrashed):
        assert issubclass(cls, mc.ManycoreError) and issubclass(cls, RuntimeError)
    assert not issubclass(mc.WorkerCrashed, mc.PoolBroken)  # one item failed, not the pool


def test_stdlib_except_clauses_catch_manycore_errors(process_pool: mc.Pool) -> None:
    from concurrent.futures import BrokenExecutor
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool) as crashed:
        process_pool.submit(crash_on, 3).result(timeout=30)
    assert isinstance(crashed.value, mc.WorkerCrashed) and crashed.value.exitcode == 7
    pool = mc.Pool(1, backend="threads", init=failing_init)
    try:
        with pytest.raises(BrokenExecutor) as broken:
            pool.submit(square, 2).result(timeout=30)
        assert isinstance(broken.value, mc.PoolBroken)
    finally:
        pool.shutdown()
