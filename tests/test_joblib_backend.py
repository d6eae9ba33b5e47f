"""joblib's "manycore" backend: n_jobs, batching, generators, nesting, errors and a
worker's death. (joblib's own test_parallel.py runs in tests/conformance/joblib_suite.py.)"""

from __future__ import annotations

import os
import time

import pytest

import helpers
import manycore as mc

joblib = pytest.importorskip("joblib")
from joblib import Parallel, delayed, parallel_config  # noqa: E402

mc.register_joblib()


def nested_pids(n_jobs: int) -> list[int]:
    return Parallel(n_jobs=n_jobs)(delayed(os.getpid)() for _ in range(4))  # type: ignore[no-any-return]


def division(x: int, y: int) -> float:
    return x / y


class FinickyError(Exception):
    """As joblib's own test has it: an __init__ that does not pass on its arguments."""

    def __init__(self, a: int, b: int):
        pass


def raise_finicky(x: int) -> int:
    if x == 7:
        raise FinickyError(1, 2)
    return x


def test_register_and_import_register_the_name() -> None:
    from joblib.parallel import BACKENDS

    import manycore.joblib  # noqa: F401

    assert BACKENDS["manycore"].__name__ == "ManycoreBackend"


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_runs_on_n_jobs_manycore_workers() -> None:
    with parallel_config(backend="manycore"):
        two = set(Parallel(n_jobs=2)(delayed(pid_after)(0.3) for _ in range(4)))
        three = set(Parallel(n_jobs=3)(delayed(pid_after)(0.3) for _ in range(6)))
    assert len(two) == 2 and len(three) == 3
    assert os.getpid() not in two | three


def test_lambdas_batches_and_order() -> None:
    with parallel_config(backend="manycore"):
        assert Parallel(n_jobs=2)(delayed(lambda x: x * x)(i) for i in range(200)) == [
            i * i for i in range(200)
        ]
        fixed = Parallel(n_jobs=2, batch_size=7)(delayed(helpers.square)(i) for i in range(30))
    assert fixed == [i * i for i in range(30)]


def test_return_as_generators() -> None:
    with parallel_config(backend="manycore"):
        gen = Parallel(n_jobs=2, return_as="generator")(delayed(abs)(-i) for i in range(6))
        assert not isinstance(gen, list) and list(gen) == list(range(6))
        unordered = Parallel(n_jobs=2, return_as="generator_unordered")(
            delayed(helpers.sleep_then)(t) for t in (1.0, 0.0, 0.0)
        )
        first = next(unordered)  # a quick one, not the 1 s one first in the input
        assert first == 0.0 and sorted(unordered) == [0.0, 1.0]


def test_nested_calls_get_only_the_workers_share() -> None:
    with parallel_config(backend="manycore"):
        inner = Parallel(n_jobs=2)(delayed(nested_pids)(-1) for _ in range(2))
    share = max(1, mc.usable_cpus() // 2)
    for pids in inner:  # never more processes than the worker's share of the CPUs
        assert len(set(pids)) <= share


def test_errors_are_raised_as_themselves() -> None:
    with parallel_config(backend="manycore"):
        with pytest.raises(ZeroDivisionError):
            Parallel(n_jobs=2)(delayed(division)(x, y) for x, y in [(0, 1), (1, 0)])
        with pytest.raises(FinickyError):
            Parallel(n_jobs=2)(delayed(raise_finicky)(i) for i in range(30))
        with Parallel(n_jobs=2) as parallel:  # a managed pool goes on after an error
            with pytest.raises(ZeroDivisionError):
                parallel(delayed(division)(1, y) for y in (1, 0))
            assert parallel(delayed(helpers.square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_a_dead_worker_fails_its_call_and_the_pool_goes_on() -> None:
    with parallel_config(backend="manycore"):
        with pytest.raises(mc.WorkerCrashed):
            Parallel(n_jobs=2)(delayed(helpers.crash_on)(i) for i in range(6))
        assert Parallel(n_jobs=2)(delayed(helpers.crash_on)(i) for i in (1, 2)) == [10, 20]


def test_an_abort_stops_the_running_batches() -> None:
    began = time.monotonic()
    with parallel_config(backend="manycore"), pytest.raises(ZeroDivisionError):
        Parallel(n_jobs=2)(
            delayed(division)(1, 0) if i == 0 else delayed(helpers.sleep_then)(30.0)
            for i in range(3)
        )
    assert time.monotonic() - began < 20  # the 30 s sleeps were killed, not waited for


def test_options_reach_the_pool() -> None:
    with parallel_config(
        backend="manycore", n_jobs=2, initializer=helpers.set_state, initargs=(5,)
    ):
        assert Parallel()(delayed(helpers.get_state)() for _ in range(3)) == [5, 5, 5]
    with pytest.raises(ValueError, match="n_jobs == 0"), parallel_config(backend="manycore"):
        Parallel(n_jobs=0)(delayed(abs)(1) for _ in range(2))


def test_an_abort_settles_every_batch_before_it_returns() -> None:
    # joblib clears its "aborting" flag when the next call on the same Parallel
    # starts: a killed batch landing after the abort would fail that call.
    from manycore._api._joblib_backend import ManycoreBackend

    backend = ManycoreBackend()
    backend.configure(n_jobs=2)
    try:
        futures = [backend.submit(lambda: time.sleep(30)) for _ in range(3)]
        backend.abort_everything(ensure_ready=True)
        assert all(f.done() for f in futures)
        assert all(f.cancelled() or f.exception() is not None for f in futures)
        assert backend.submit(lambda: 7).result(timeout=20) == 7
    finally:
        backend.terminate()


def my_generator(raise_at: int):  # type: ignore[no-untyped-def]
    for i in range(20):
        if i == raise_at:
            raise ValueError("iterator error")
        yield i


@pytest.mark.parametrize("raise_at", [0, 5, 19])
def test_an_error_of_the_task_iterator_is_raised_after_an_aborted_call(raise_at: int) -> None:
    with Parallel(n_jobs=2, backend="manycore") as p:
        for _ in range(5):
            with pytest.raises(ZeroDivisionError):
                p(
                    delayed(division)(1, 0) if i == 0 else delayed(helpers.sleep_then)(30.0)
                    for i in range(3)
                )
            with pytest.raises(ValueError, match="iterator error"):
                p(delayed(abs)(i) for i in my_generator(raise_at))
