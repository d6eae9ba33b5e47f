"""Policy written once: the one retry book (``Retries``), the one ``on_error``
(``apply_on_error``) and the deadline book's check for a backend that cannot
interrupt an item, each tested on its own without processes; and the pool's one
retry thread, on a backend that only records what it is sent."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest

import manycore as mc
from manycore._core import Batch, BatchResult, Deadlines, Failure
from manycore._observe import StatsRecorder
from manycore._scheduler import CallOptions, Retries, Scheduler
from manycore._scheduler._on_error import apply_on_error, on_batch
from manycore.backends import Backend, BackendOptions, Done


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ Retries


def test_a_retry_is_booked_after_its_backoff_and_counted_per_key() -> None:
    clock = Clock()
    book: Retries[int, str] = Retries(clock)
    options = CallOptions(retries=2)
    assert book.book(7, ValueError(), options, "seven")
    assert len(book) == 1 and book.next_due() == 100.0 + options.backoff(1)
    assert book.due() == [] and book.wait() == pytest.approx(options.backoff(1))
    clock.now += options.backoff(1)
    assert book.due() == ["seven"] and len(book) == 0 and book.wait() is None
    assert book.book(7, ValueError(), options, "again")
    assert book.next_due() == clock.now + options.backoff(2)  # the second backoff
    clock.now += 10
    assert book.due() == ["again"]
    assert not book.book(7, ValueError(), options, "no more")  # two retries used
    assert book.book(8, ValueError(), options, "eight")  # another key counts apart


def test_what_is_not_retried_is_not_booked() -> None:
    book: Retries[int, str] = Retries(Clock())
    assert not book.book(1, KeyError(), CallOptions(retries=3, retry_on=(ValueError,)), "x")
    assert not book.book(1, ValueError(), CallOptions(), "x")  # retries=0
    assert len(book) == 0 and book.next_due() is None


def test_retries_fall_due_earliest_first() -> None:
    clock = Clock()
    book: Retries[str, str] = Retries(clock)
    twice = CallOptions(retries=2)
    book.book("a", ValueError(), twice, "a1")
    clock.now += 10
    book.book("a", ValueError(), twice, "a2")  # a's second: a longer backoff
    book.book("b", ValueError(), twice, "b1")
    assert book.due() == [] and book.next_due() == clock.now + twice.backoff(1)
    clock.now += twice.backoff(2)
    assert book.due() == ["b1", "a2"]


def test_cancel_forget_and_drain() -> None:
    clock = Clock()
    book: Retries[str, str] = Retries(clock)
    once = CallOptions(retries=1)
    for key in "abc":
        book.book(key, ValueError(), once, key.upper())
    assert book.cancel("a") == "A" and book.cancel("a") is None
    assert not book.book("a", ValueError(), once, "A")  # its one retry was used
    book.forget("b")  # settled: the count goes too
    assert book.book("b", ValueError(), once, "B")
    assert sorted(book.drain()) == ["B", "C"] and len(book) == 0
    clock.now += 10
    assert book.due() == [] and book.next_due() is None


def test_forget_a_key_never_booked_and_a_drained_one() -> None:
    clock = Clock()
    book: Retries[str, str] = Retries(clock)
    once = CallOptions(retries=1)
    book.forget("never")  # a call that succeeded at once: nothing to undo
    assert len(book) == 0 and book.next_due() is None
    book.book("a", ValueError(), once, "A")
    book.drain()  # the pool closes: the retry is cancelled, its count stays ...
    assert not book.book("a", ValueError(), once, "A")
    book.forget("a")  # ... until the call is settled
    assert book.book("a", ValueError(), once, "A") and book.next_due() is not None
    book.forget("a")
    clock.now += 10
    assert book.due() == [] and book.next_due() is None and len(book) == 0


# ----------------------------------------------------------------- on_error


def _failures(values: list[Any], failed: dict[int, BaseException]) -> Any:
    return lambda offset: Failure(failed[offset], offset, values[offset])


@pytest.mark.parametrize(
    ("on_error", "settled", "out"),
    [("raise", 1, ["a"]), ("skip", 4, ["a", "d"]), ("collect", 4, ["a", 1, 2, "d"])],
)
def test_apply_on_error(on_error: str, settled: int, out: list[Any]) -> None:
    values: list[Any] = ["a", None, None, "d"]
    failed: dict[int, BaseException] = {2: KeyError("two"), 1: ValueError("one")}
    covered, handed, error = apply_on_error(
        on_error, values, failed.keys(), _failures(values, failed)
    )
    assert covered == settled
    if on_error == "raise":
        assert error is failed[1] and handed == out
        return
    assert error is None
    assert [v.index if isinstance(v, Failure) else v for v in handed] == out


def test_apply_on_error_without_failures_hands_out_the_values_themselves() -> None:
    values = [1, 2]
    assert apply_on_error("raise", values, set(), _failures(values, {})) == (2, values, None)


def test_a_batch_failure_names_its_input() -> None:
    batch = Batch(abs, ["x", "y", "z"], 10)
    covered, out, error = on_batch("collect", batch, [0, None, 2], {1: ValueError("bad")})
    assert covered == 3 and error is None and out[0] == 0 and out[2] == 2
    assert (out[1].index, out[1].input) == (11, "y")
    assert "manycore: raised while processing input item 11" in out[1].exception.__notes__
    _, _, raised = on_batch("raise", batch, [0, None, None], {1: KeyError(), 2: KeyError()})
    assert raised is not None and "item 11" in raised.__notes__[0]


# ---------------------------------------------------------- deadline book


def test_passed_says_whether_a_returned_item_overstayed() -> None:
    book: Deadlines[int] = Deadlines()
    book.arm(0, 10.0)
    book.arm(1, 20.0)
    assert not book.passed(0, 9.5) and book.passed(1, 20.0)
    assert len(book) == 0 and not book.passed(1, 99.0)  # off the book: no deadline


def test_the_serial_backend_fails_an_item_that_overstayed() -> None:
    with mc.Pool(backend="serial") as pool:
        out = pool.map(time.sleep, [0, 0.3, 0], timeout=0.15, on_error="collect")
    assert out[0] is None and out[2] is None
    assert isinstance(out[1], Failure) and isinstance(out[1].exception, mc.TaskTimeout)
    assert "longer than timeout=0.15 s" in str(out[1].exception)


# ------------------------------------------------- the pool's retry thread


class Recording(Backend):
    """Runs nothing: keeps what it is sent until the test settles it."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__(BackendOptions(workers=1))
        self.sent: list[tuple[Batch, Done]] = []
        self.closed = False

    def submit(self, batch: Batch, done: Done) -> None:
        if self.closed:
            raise mc.PoolClosed("closed")
        if batch.claim is None or batch.claim():
            self.sent.append((batch, done))

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        self.closed = True

    def fail_all(self) -> None:
        sent, self.sent = self.sent, []
        for batch, done in sent:
            done(batch, BatchResult([None], {0: ValueError("flaky")}, 0.0))


def _retry_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "manycore-retries"]


def _wait_for(condition: Any, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


@pytest.fixture
def scheduler() -> Scheduler:
    return Scheduler(Recording(), StatsRecorder(1))


def _submit(scheduler: Scheduler, retries: int) -> Future[Any]:
    return scheduler.submit(abs, (-1,), {}, CallOptions(retries=retries))


def test_one_thread_sends_the_retries_of_many_calls(scheduler: Scheduler) -> None:
    backend = scheduler.backend
    assert isinstance(backend, Recording)
    futures = [_submit(scheduler, 1) for _ in range(20)]
    backend.fail_all()
    assert len(_retry_threads()) == 1  # not a timer per retry
    _wait_for(lambda: len(backend.sent) == 20)
    backend.fail_all()  # the last attempt: each future fails now
    assert all(isinstance(f.exception(0), ValueError) for f in futures)
    _wait_for(lambda: not _retry_threads())  # none waits: the thread has ended


def test_a_waiting_retry_is_cancelled_and_close_cancels_the_rest(scheduler: Scheduler) -> None:
    backend = scheduler.backend
    assert isinstance(backend, Recording)
    first, second = _submit(scheduler, 3), _submit(scheduler, 3)
    backend.fail_all()
    assert scheduler.cancel(first, force=False)
    with pytest.raises(CancelledError):
        first.result(0)
    scheduler.settle_retries(wait=False)
    with pytest.raises(CancelledError):
        second.result(0)
    _wait_for(lambda: not _retry_threads())
    assert backend.sent == []  # neither was sent again


def test_a_retry_run_inline_does_not_hold_up_the_retry_of_a_call_it_waits_for() -> None:
    """On the serial backend a retry runs where it is sent: not in the one retry
    thread, which the retry of the nested call it waits for needs."""
    calls: dict[str, int] = {}

    def flaky(name: str, pool: mc.Pool) -> str:
        calls[name] = calls.get(name, 0) + 1
        if calls[name] == 1:
            raise ValueError(name)
        if name == "outer":
            return pool.schedule(flaky, ("inner", pool), retries=1).result(timeout=5)
        return name

    with mc.Pool(backend="serial") as pool:
        assert pool.schedule(flaky, ("outer", pool), retries=1).result(timeout=10) == "inner"
    assert calls == {"outer": 2, "inner": 2}
