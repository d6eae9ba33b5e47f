"""MapRun driven by a scripted backend: no threads, no processes, no sleeping.

The fake backend only records what MapRun submits. Whenever MapRun waits for a
batch (``Backend.drive``), the backend plays the test's next scripted step: a
batch finishes (its items computed here, in order), crashes, times out, or the
clock moves on. So every interleaving is chosen by the test, event by event,
the way Dask tests its worker state machine. MapRun's clock is a fake one too:
retry back-off passes when a step says so.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import manycore as mc
from manycore._core._batch import Batch, Done, pinned, run_batch
from manycore._scheduler import CallOptions, _maprun
from manycore._scheduler._maprun import ChunkPlanner, InputSource, MapRun
from manycore.backends import Backend, BackendOptions

Step = Callable[["ScriptedBackend"], None]


class Clock:
    """Stands in for the ``time`` module in MapRun: time passes only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class ScriptedBackend(Backend):
    """Holds submitted batches until a scripted step settles them."""

    name = "scripted"

    def __init__(self, clock: Clock, workers: int = 2, steps: Iterable[Step] = ()):
        super().__init__(BackendOptions(workers=workers))
        self.clock = clock
        self.steps: deque[Step] = deque(steps)
        self.running: list[tuple[Batch, Done]] = []  # submitted, not settled; oldest first
        self.sent: list[list[Any]] = []  # the items of each submit, in order
        self.cancelled: list[list[Any]] = []
        self.most_running = 0

    def submit(self, batch: Batch, done: Done) -> None:
        self.running.append((batch, done))
        self.sent.append(list(batch.items))
        self.most_running = max(self.most_running, len(self.running))

    def drive(self, ready: Callable[[], bool], deadline: float | None = None) -> bool:
        while not ready():
            if deadline is not None and self.clock.now >= deadline:
                return True  # a retry fell due: MapRun sends it
            assert self.steps, f"MapRun waits, and the script is over: {self.describe()}"
            self.steps.popleft()(self)
        return True

    def cancel(self, batch: Batch) -> bool:
        self.take(lambda b: b is batch)
        self.cancelled.append(list(batch.items))
        return True

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        return None

    def take(self, pick: int | Callable[[Batch], bool]) -> tuple[Batch, Done]:
        """Remove a running batch: by position (0 the oldest, -1 the newest) or
        the first one ``pick(batch)`` accepts."""
        if isinstance(pick, int):
            return self.running.pop(pick)
        for i, (batch, _) in enumerate(self.running):
            if pick(batch):
                return self.running.pop(i)
        raise AssertionError(f"no such batch running: {self.describe()}")

    def describe(self) -> str:
        return f"running {[list(b.items) for b, _ in self.running]}"


# ------------------------------------------------------------------ the steps


def holding(item: Any) -> Callable[[Batch], bool]:
    return lambda batch: item in list(batch.items)


def finish(pick: int | Callable[[Batch], bool] = 0) -> Step:
    """The batch runs: each item is computed here, failures caught per item."""

    def step(backend: ScriptedBackend) -> None:
        batch, done = backend.take(pick)
        done(batch, run_batch(batch.fn, batch.items, batch.star, None, Exception))

    return step


def crash(pick: int | Callable[[Batch], bool] = 0) -> Step:
    """The batch's worker dies: the whole batch fails with WorkerCrashed."""

    def step(backend: ScriptedBackend) -> None:
        batch, done = backend.take(pick)
        done(batch, mc.WorkerCrashed("the worker died", exitcode=-11))

    return step


def time_out(pick: int | Callable[[Batch], bool], item: Any) -> Step:
    """``item`` runs past the batch's timeout: it fails, the rest are unrun."""

    def step(backend: ScriptedBackend) -> None:
        batch, done = backend.take(pick)
        offset = list(batch.items).index(item)
        error = mc.TaskTimeout("too slow", timeout=batch.timeout, index=batch.start + offset)
        done(batch, pinned(batch, offset, error, seconds=batch.timeout or 0.0))

    return step


def tick(seconds: float) -> Step:
    def step(backend: ScriptedBackend) -> None:
        backend.clock.now += seconds

    return step


def check(condition: Callable[[ScriptedBackend], object]) -> Step:
    """Assert something about the state of the run at this point of the script."""

    def step(backend: ScriptedBackend) -> None:
        assert condition(backend), backend.describe()

    return step


# --------------------------------------------------------------- the run itself


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_maprun, "time", fake)
    return fake


def start_run(
    backend: Backend,
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    chunksize: int | None = 1,
    **policy: Any,
) -> MapRun:
    """The one place a MapRun is built (``policy``: CallOptions' fields)."""
    source = InputSource((items,), star=False)
    planner = ChunkPlanner(backend.workers, chunksize)
    return MapRun(backend, fn, source, CallOptions(**policy), planner)


def values(run: MapRun) -> list[Any]:
    return [v for out in run for v in out]


def square(x: int) -> int:
    return x * x


def fails_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


class Flaky:
    """Fails the first ``times`` calls for each item in ``bad``."""

    def __init__(self, bad: dict[int, type[Exception]], times: int):
        self.bad, self.times = bad, times
        self.calls: list[int] = []

    def __call__(self, x: int) -> int:
        self.calls.append(x)
        if x in self.bad and self.calls.count(x) <= self.times:
            raise self.bad[x](f"flaky {x}")
        return x * 10


# ---------------------------------------------------------------------- ordering


def test_ordered_results_while_batches_finish_out_of_order(clock: Clock) -> None:
    steps = [finish(-1), finish(holding(2)), finish(holding(4)), finish(0)]
    backend = ScriptedBackend(clock, workers=2, steps=steps)
    run = iter(start_run(backend, square, range(8), chunksize=2))
    # The first batch holds the three others back until it finishes, last.
    assert next(run) == [0, 1] and not backend.steps
    assert [v for out in run for v in out] == [4, 9, 16, 25, 36, 49]
    assert backend.sent == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_unordered_yields_batches_as_they_finish(clock: Clock) -> None:
    steps = [finish(-1), finish(holding(0)), finish(0)]
    backend = ScriptedBackend(clock, workers=2, steps=steps)
    run = start_run(backend, square, range(6), chunksize=2, ordered=False)
    assert list(run) == [[16, 25], [0, 1], [4, 9]]


def test_an_ordered_result_is_handed_out_before_later_batches_finish(clock: Clock) -> None:
    backend = ScriptedBackend(clock, workers=1, steps=[finish(0)])
    run = iter(start_run(backend, square, range(4), chunksize=1))
    assert next(run) == [0]
    assert backend.describe() == "running [[1]]"  # only the first has been settled
    backend.steps.extend([finish(0), finish(0), finish(0)])
    assert [v for out in run for v in out] == [1, 4, 9]


# ----------------------------------------------------------------------- retries


def test_a_failing_item_is_retried_alone_after_its_backoff(clock: Clock) -> None:
    fn = Flaky({2: ValueError}, times=2)
    backend = ScriptedBackend(clock, workers=1, steps=[finish(0)] * 3)
    out = values(start_run(backend, fn, range(4), chunksize=4, retries=2))
    assert out == [0, 10, 20, 30]
    assert backend.sent == [[0, 1, 2, 3], [2], [2]]  # only the failed item goes again
    assert fn.calls.count(2) == 3 and fn.calls.count(0) == 1
    # Each retry waited its backoff on MapRun's clock (no real sleep).
    assert clock.now == pytest.approx(1000.0 + CallOptions().backoff(1) + CallOptions().backoff(2))


def test_retries_run_out_and_the_error_is_raised(clock: Clock) -> None:
    fn = Flaky({1: ValueError}, times=5)
    backend = ScriptedBackend(clock, workers=1, steps=[finish(0)] * 4)
    with pytest.raises(ValueError, match="flaky 1") as info:
        values(start_run(backend, fn, range(3), chunksize=3, retries=2))
    assert fn.calls.count(1) == 3  # the first run and two retries
    assert "manycore: raised while processing input item 1" in getattr(info.value, "__notes__", [])


def test_retry_on_filters_which_errors_are_retried(clock: Clock) -> None:
    fn = Flaky({1: ValueError, 2: KeyError}, times=1)
    backend = ScriptedBackend(clock, workers=1, steps=[finish(0)] * 3)
    run = start_run(
        backend, fn, range(4), chunksize=4, retries=3, retry_on=(KeyError,), on_error="collect"
    )
    out = values(run)
    assert out[0] == 0 and out[2] == 20 and out[3] == 30  # the KeyError was retried
    assert isinstance(out[1], mc.Failure) and isinstance(out[1].exception, ValueError)
    assert backend.sent == [[0, 1, 2, 3], [2]]


def test_a_retried_item_does_not_hold_back_results_before_it(clock: Clock) -> None:
    fn = Flaky({1: ValueError}, times=1)
    backend = ScriptedBackend(clock, workers=1, steps=[finish(0)])
    run = iter(start_run(backend, fn, range(3), chunksize=3, retries=1))
    assert next(run) == [0]  # item 0 is settled while item 1 waits for its retry
    backend.steps.extend([finish(holding(1))])
    assert [v for out in run for v in out] == [10, 20]


# ------------------------------------------------------------------ crash bisection


def test_a_crashed_batch_is_split_to_find_the_one_bad_item(clock: Clock) -> None:
    steps = [crash(0), finish(holding(0)), finish(holding(1)), crash(holding(2)), finish(0)]
    backend = ScriptedBackend(clock, workers=2, steps=steps)
    out = values(start_run(backend, square, range(4), chunksize=4, on_error="collect"))
    assert out[:2] == [0, 1] and out[3] == 9
    assert isinstance(out[2], mc.Failure) and isinstance(out[2].exception, mc.WorkerCrashed)
    assert out[2].index == 2
    assert backend.sent == [[0, 1, 2, 3], [0], [1], [2], [3]]


def test_a_crash_in_a_single_item_batch_is_not_a_retry(clock: Clock) -> None:
    # Bisection reruns are free; a crash of one item is its own failure, and
    # retries (when asked) apply to it as to any error.
    steps = [crash(0), crash(holding(0)), finish(0)]
    backend = ScriptedBackend(clock, workers=2, steps=steps)
    with pytest.raises(mc.WorkerCrashed):
        values(start_run(backend, square, range(2), chunksize=2, retries=0))
    assert backend.sent == [[0, 1], [0], [1]]
    assert backend.cancelled == [[1]]  # what was still out is dropped on the way out


# ----------------------------------------------------------------------- timeouts


def test_a_timeout_fails_that_item_only(clock: Clock) -> None:
    steps = [time_out(0, 2), finish(0), finish(0)]
    backend = ScriptedBackend(clock, workers=1, steps=steps)
    run = start_run(
        backend,
        square,
        range(5),
        chunksize=5,
        timeout=1.5,
        on_error="collect",
        retries=2,
        retry_on=(ValueError,),
    )
    out = values(run)
    assert [v for i, v in enumerate(out) if i != 2] == [0, 1, 9, 16]
    assert isinstance(out[2], mc.Failure) and isinstance(out[2].exception, mc.TaskTimeout)
    assert out[2].exception.timeout == 1.5
    # The items it cut short run again at once (not a retry); the timed-out one does not.
    assert backend.sent == [[0, 1, 2, 3, 4], [0, 1], [3, 4]]


def test_a_timeout_is_raised_in_its_turn(clock: Clock) -> None:
    backend = ScriptedBackend(clock, workers=1, steps=[time_out(0, 1), finish(0), finish(0)])
    run = iter(start_run(backend, square, range(3), chunksize=3, timeout=0.5))
    assert next(run) == [0]
    with pytest.raises(mc.TaskTimeout):
        next(run)


# ------------------------------------------------------------------- back-pressure


class Counted:
    """A lazy input that counts how far it has been read."""

    def __init__(self, n: int | None = None):
        self.n, self.read = n, 0

    def __iter__(self) -> Iterator[int]:
        while self.n is None or self.read < self.n:
            self.read += 1
            yield self.read - 1


def test_no_more_batches_in_flight_than_the_window(clock: Clock) -> None:
    source = Counted(40)
    window = 2 * 3
    bounded = check(lambda b: len(b.running) <= window and source.read == len(b.sent))
    backend = ScriptedBackend(clock, workers=3, steps=[bounded, finish(-1)] * 40)
    assert values(start_run(backend, square, source, chunksize=1)) == [x * x for x in range(40)]
    assert backend.most_running == window


def test_a_lazy_input_is_not_read_past_the_bound(clock: Clock) -> None:
    source = Counted()  # endless
    window = 2 * 2
    others = finish(lambda batch: 0 not in list(batch.items))
    backend = ScriptedBackend(clock, workers=2, steps=[others] * 100)
    run = iter(start_run(backend, square, source, chunksize=1))
    # The oldest batch never finishes: ordered results pile up behind it, and
    # MapRun stops reading once 4 windows of them wait: it waits for the
    # first alone, and the script has no other batch to finish.
    with pytest.raises(AssertionError, match=re.escape("no such batch running: running [[0]]")):
        next(run)
    assert 4 * window < source.read <= 5 * window  # held results, plus a window
    assert source.read == len(backend.sent)  # nothing was read ahead of sending


def test_reading_follows_the_consumer(clock: Clock) -> None:
    source = Counted()
    backend = ScriptedBackend(clock, workers=1, steps=[finish(0)] * 10)
    run = iter(start_run(backend, square, source, chunksize=1))
    assert [next(run) for _ in range(5)] == [[0], [1], [4], [9], [16]]
    assert source.read <= 5 + 2  # what was consumed, plus the window in flight


# ------------------------------------------------------------------------ on_error


def test_on_error_raise_hands_out_what_came_before(clock: Clock) -> None:
    backend = ScriptedBackend(clock, workers=2, steps=[finish(-1), finish(0), finish(0)])
    got: list[Any] = []
    with pytest.raises(ValueError, match="odd 1"):
        for out in start_run(backend, fails_on_odd, [0, 2, 1, 4], chunksize=2):
            got.extend(out)
    assert got == [0, 2]


def test_on_error_raise_cancels_what_is_still_out(clock: Clock) -> None:
    backend = ScriptedBackend(clock, workers=2, steps=[finish(0)])
    with pytest.raises(ValueError, match="odd 1"):
        values(start_run(backend, fails_on_odd, range(8), chunksize=2))
    assert backend.cancelled == [[2, 3], [4, 5], [6, 7]] and not backend.running


def test_on_error_collect_keeps_every_item(clock: Clock) -> None:
    backend = ScriptedBackend(clock, workers=2, steps=[finish(-1), finish(0), finish(0)])
    out = values(start_run(backend, fails_on_odd, range(6), chunksize=2, on_error="collect"))
    assert [v for v in out if not isinstance(v, mc.Failure)] == [0, 2, 4]
    failed = [v for v in out if isinstance(v, mc.Failure)]
    assert [f.index for f in failed] == [1, 3, 5] and [f.input for f in failed] == [1, 3, 5]


def test_on_error_collect_unordered_gives_whole_stretches(clock: Clock) -> None:
    backend = ScriptedBackend(clock, workers=2, steps=[finish(-1), finish(0), finish(0)])
    run = start_run(backend, fails_on_odd, range(6), chunksize=2, ordered=False, on_error="collect")
    stretches = list(run.indexed())
    assert [start for start, _ in stretches] == [4, 0, 2]
    assert all(len(out) == 2 and isinstance(out[1], mc.Failure) for _, out in stretches)
