"""A worker that dies (os._exit, segfault, SIGKILL) fails only its item; the pool heals."""

from __future__ import annotations

import pytest

import manycore as mc
from faulty import GOOD, die_on, expected

DEATHS = [
    pytest.param("exit", "exit code 7", 7, id="os._exit"),
    pytest.param("segfault", "signal SIGSEGV", -11, id="segfault"),
    pytest.param("kill", "signal SIGKILL", -9, id="sigkill"),
]


def fresh_map_works(pool: mc.Pool) -> None:
    assert pool.map(expected, range(30)) == [x * GOOD for x in range(30)]


@pytest.mark.parametrize(("how", "words", "code"), DEATHS)
def test_crash_fails_only_its_item(process_pool: mc.Pool, how: str, words: str, code: int) -> None:
    before = set(process_pool.pids())
    out = process_pool.map(die_on, [(how, x) for x in range(10)], on_error="collect")
    failure = out[3]
    assert isinstance(failure, mc.Failure) and failure.index == 3
    err = failure.exception
    assert type(err) is mc.WorkerCrashed
    assert err.exitcode == code and err.index == 3
    assert words in str(err) and "input item 3" in str(err)
    assert [v for i, v in enumerate(out) if i != 3] == [x * GOOD for x in range(10) if x != 3]
    assert len(process_pool.pids()) == 2 and set(process_pool.pids()) != before
    fresh_map_works(process_pool)


@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
def test_crash_in_a_chunk_blames_one_item(process_pool: mc.Pool, timed: bool) -> None:
    # Untimed, the chunk's items are re-run one by one to find the culprit; timed,
    # the worker's progress slot names it at once. Either way one item fails.
    items = [("exit", x) for x in range(40)]
    out = process_pool.map(
        die_on, items, chunksize=10, on_error="collect", timeout=30 if timed else None
    )
    failed = [f.index for f in out if isinstance(f, mc.Failure)]
    assert failed == [3]
    assert "input item 3" in str(out[3].exception)
    assert [v for i, v in enumerate(out) if i != 3] == [x * GOOD for x in range(40) if x != 3]
    fresh_map_works(process_pool)


def test_crash_raises_with_on_error_raise(process_pool: mc.Pool) -> None:
    with pytest.raises(mc.WorkerCrashed, match=r"exit code 7\) while running input item 3"):
        process_pool.map(die_on, [("exit", x) for x in range(10)])
    fresh_map_works(process_pool)


def test_submit_crash(process_pool: mc.Pool) -> None:
    future = process_pool.submit(die_on, ("kill", 3))
    with pytest.raises(mc.WorkerCrashed, match=r"SIGKILL.*the call to die_on"):
        future.result(timeout=30)
    assert process_pool.submit(die_on, ("kill", 1)).result(timeout=30) == GOOD


def test_crash_retried(process_pool: mc.Pool) -> None:
    # A crash is an exception like any other for retry_on: retried, it crashes again.
    with pytest.raises(mc.WorkerCrashed):
        process_pool.map(die_on, [("exit", x) for x in range(5)], retries=2)
    out = process_pool.map(
        die_on, [("exit", x) for x in range(5)], retries=2, retry_on=ValueError, on_error="skip"
    )
    assert out == [0, 10, 20, 40]
