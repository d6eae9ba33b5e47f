"""``backend="auto"`` on ``mc.map``/``imap``/``starmap``: try the first items, then pick.

The first items (about ``_SAMPLE_SECONDS`` of work, at most ``_SAMPLE_ITEMS``) run
inline through the ordinary scheduler on the serial backend, under the call's own
policy (``on_error``, ``retries``, ``timeout``), each call timed: wall and CPU
time, and how long it waited for a CPU that other programs kept busy (computing,
not waiting).
:func:`manycore._observe._recommend.decide`, the same rules as ``mc.profile``'s, then
picks inline, threads or processes for the rest, which goes on from the same
input source on that backend's default pool. So no item runs twice, a failure
is handled (and numbered) exactly as in a map on one backend, results keep their
order, and a generator is read once, lazily. An ``async def`` function goes to
asyncio at once: there is nothing else to pick.

Calls that compute (CPU time near their wall time, a few ms or more) are then
probed: the next few items run on two threads at once, and the CPU they kept busy
says whether ``fn`` releases the GIL (NumPy, a compiled kernel): if it does,
threads run the rest without pickling (see :mod:`manycore._observe._gil`).

With ``timeout=`` the sample runs on one thread of its own instead of inline: a
call that overstays is then abandoned, as on threads, rather than waited for.
``explain=True`` writes one line to stderr: what was picked, and why.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from manycore._api import _validate as v
from manycore._api._calls import default_pool_running, lease_default_pool, stop_on_interrupt
from manycore._api._options import MapWork, default_workers, map_call
from manycore._api._pool import Pool
from manycore._observe import (
    PROBE_THREADS,
    BackendNames,
    Measurements,
    ProbeCall,
    Recommendation,
    decide,
    probe_items,
    queued,
    queued_between,
    threads_busy,
    worth_probing,
)
from manycore._scheduler import CallOptions, InputSource
from manycore.backends import backend_for, is_async_callable

__all__ = ["AutoMap"]

T = TypeVar("T")

# The backends auto picks among, by kind: the registry names them.
_INLINE, _THREADS, _PROCESSES, _ASYNC = (
    backend_for(kind) for kind in ("inline", "thread", "process", "coroutine")
)
_NAMES = BackendNames.of(backend_for)  # for the recommendation
_SAMPLE_SECONDS = 0.2  # inline work before deciding: small next to any map worth parallelising
_SAMPLE_ITEMS = 64  # ... and at most this many items (cheap ones are clear by then)
_PROBE_WAIT = 1.0  # seconds a probe thread waits for the other to start


class AutoMap(Generic[T]):
    """One ``backend="auto"`` call: arguments checked at once (before any work),
    the work done when :meth:`run` is iterated (lists of results, in order)."""

    def __init__(self, work: MapWork[T], options: Mapping[str, Any]):
        """``options``: the call's arguments by name, as the user gave them."""
        self.work = work
        self.is_async = is_async_callable(work.fn)
        if options["address"] is not None:
            v.check_cluster("auto", options["address"], None, None)  # raises: not a cluster
        mode = _ASYNC if self.is_async else "auto"
        self.workers = v.check_workers(options["workers"], options["concurrency"], mode)
        # Refused: auto may pick threads, which cannot be pinned.
        v.check_gpus_on(mode, self.workers, v.check_gpus(options.get("gpus")))
        self.start_method = options["start_method"]
        if self.start_method is not None:
            # It applies if processes are picked; an async fn never runs on them.
            v.check_start_method(self.start_method, _ASYNC if self.is_async else _PROCESSES)
        self.explain = options["explain"]
        # stats=True and checkpoint= were refused already (auto runs on two backends).
        self.policy = map_call(CallOptions(), {**options, "stats": False}).options

    def run(self) -> Iterator[list[T]]:
        source = InputSource(self.work.iterables, self.work.star)
        if self.is_async:
            concurrency = self.workers or default_workers(_ASYNC)
            plan = Measurements(
                0, 0.0, 0.0, is_async=True, predict=True, async_workers=concurrency, names=_NAMES
            )
            self._say(decide(plan))
            yield from self._rest(_ASYNC, source)
            return
        source.until = _SAMPLE_ITEMS
        sampler = _Sampler(self.work.fn, source)
        yield from self._sample(sampler, source)
        sampler.close()
        measured = self._measured(sampler, source)
        if self._probing(measured):
            probe = _Probe(self.work.fn)
            source.until = source.position + probe_items(measured.cpu_per_call)
            yield from self._probe(probe, source)
            busy = None if probe.broken else threads_busy(probe.calls, probe.began)
            measured = dataclasses.replace(self._measured(sampler, source), threads_busy=busy)
        source.until = None
        source.done = source.position  # the rest's progress bar starts past the sample
        choice = self._timed_choice(decide(measured), sampler)
        self._say(choice)
        if self.policy.timeout is not None and choice.backend == _THREADS and choice.workers == 1:
            yield from self._on_own_thread(self.work, self.policy, source)
        else:
            yield from self._rest(choice.backend, source)

    def _timed_choice(self, choice: Recommendation, sampler: _Sampler[T]) -> Recommendation:
        """With ``timeout=``, never the caller's thread: no call could be stopped
        there (serial only notices an overstay once the call returns)."""
        limit = self.policy.timeout
        if limit is None or choice.backend not in (_INLINE,):
            return choice
        if sampler.calls == 0:
            workers = self.workers or default_workers(_THREADS)
            why = (
                f"no sampled call ended within timeout={limit:g} s: threads, which abandon "
                "a call that overstays and go on with the others"
            )
            return dataclasses.replace(choice, backend=_THREADS, workers=workers, reason=why)
        why = choice.reason.replace("the rest runs inline", "the rest runs on one thread")
        why += f" (with timeout={limit:g} s, a thread of its own can abandon a call that overstays)"
        return dataclasses.replace(choice, backend=_THREADS, workers=1, reason=why)

    def _sample(self, sampler: _Sampler[T], source: InputSource) -> Iterator[list[T]]:
        """The first items, one per batch (the sample can end after any of them),
        with the call's policy; no progress bar for these few."""
        policy = dataclasses.replace(self.policy, progress=False, chunksize=1)
        sampled = dataclasses.replace(self.work, fn=sampler)
        if self.policy.timeout is None:
            lease = lease_default_pool(_INLINE, None, None)
            with stop_on_interrupt(lease):
                yield from lease.pool.start_map(sampled, policy, source)
            return
        yield from self._on_own_thread(sampled, policy, source)

    def _probing(self, m: Measurements) -> bool:
        """Whether to run the next items on two threads at once: calls that
        compute long enough to time, with items left and threads on offer."""
        if m.remaining is not None and m.remaining < probe_items(m.cpu_per_call):
            return False
        threads = self.workers or default_workers(_THREADS)
        cpus = self.workers or default_workers(_PROCESSES)
        share = m.cpu / m.own_wall if m.own_wall > 0 else 0.0
        return worth_probing(m.cpu_per_call, share, threads, cpus)

    def _probe(self, probe: _Probe[T], source: InputSource) -> Iterator[list[T]]:
        """The next few items on a pool of ``PROBE_THREADS`` threads, each
        call timed (see :func:`manycore._observe.threads_busy`)."""
        policy = dataclasses.replace(self.policy, progress=False, chunksize=1)
        pool = Pool(PROBE_THREADS, backend=_THREADS)
        try:
            probe.began = time.perf_counter()
            yield from pool.start_map(dataclasses.replace(self.work, fn=probe), policy, source)
        finally:
            pool.shutdown(wait=self.policy.timeout is None)

    def _on_own_thread(
        self, work: MapWork[T], policy: CallOptions, source: InputSource
    ) -> Iterator[list[T]]:
        """Run on one thread of a pool of its own: a call past its timeout is
        abandoned (it ends in the background), not awaited."""
        pool = Pool(1, backend=_THREADS)
        try:
            yield from pool.start_map(work, policy, source)
        finally:
            pool.shutdown(wait=False)

    def _measured(self, sampler: _Sampler[T], source: InputSource) -> Measurements:
        remaining = source.remaining
        if remaining is None and source.at_end():
            remaining = 0
        processes = self.workers or default_workers(_PROCESSES)
        return Measurements(
            sampler.calls,
            sampler.wall,
            sampler.cpu,
            queued=sampler.queued,
            bytes_per_task=_data_per_task(self.work.fn, sampler.first, source.star),
            predict=True,
            remaining=remaining,
            thread_workers=self.workers or default_workers(_THREADS),
            process_workers=processes,
            processes_warm=default_pool_running(_PROCESSES, self.workers, self.start_method),
            names=_NAMES,
        )

    def _rest(self, backend: str, source: InputSource) -> Iterator[list[T]]:
        """What the sample left, on ``backend``'s default pool."""
        workers = None if backend == _INLINE else self.workers
        method = self.start_method if backend == _PROCESSES else None
        lease = lease_default_pool(backend, workers, method)
        with stop_on_interrupt(lease):
            yield from lease.pool.start_map(self.work, self.policy, source)

    def _say(self, choice: Recommendation) -> None:
        if not self.explain:
            return
        if choice.backend == _INLINE:
            how = "serial (inline)"
        elif choice.backend == _ASYNC:
            how = f"asyncio (concurrency={choice.workers})"
        else:
            how = f"{choice.backend} ({choice.workers} workers)"
        print(f'manycore: backend="auto" picked {how}: {choice.reason}', file=sys.stderr)


class _Sampler(Generic[T]):
    """``fn``, timing each call (wall, CPU and wait for a CPU, in the thread that
    runs it); it ends the sample (``source.until``) once the calls have taken long enough."""

    def __init__(self, fn: Callable[..., T], source: InputSource):
        self._fn = fn
        self._source = source
        self.calls = 0
        self.wall = 0.0
        self.cpu = 0.0
        self.queued = 0.0  # of wall: waiting for a CPU other programs kept busy
        self.first: tuple[tuple[object, ...], T] | None = None  # a call's args and result
        # A call abandoned at its timeout ends in its own time, maybe after the
        # sample: once closed, it must not cut the input short for the rest.
        self._lock = threading.Lock()
        self._closed = False
        self._began: float | None = None  # when the first sampled call started

    def close(self) -> None:
        """The sample is over: calls that end from now on change nothing."""
        with self._lock:
            self._closed = True

    def __call__(self, *args: object) -> T:
        with self._lock:
            # Calls abandoned at a timeout never add their time: the sample also
            # ends on the clock, or it could last 64 timeouts.
            if self._began is None:
                self._began = time.perf_counter()
            elif not self._closed and time.perf_counter() - self._began >= _SAMPLE_SECONDS:
                self._source.until = self._source.position  # take nothing more
        q0 = queued()
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            result = self._fn(*args)
        finally:
            cpu = time.thread_time() - c0
            wall = time.perf_counter() - w0
            q1 = queued()
            with self._lock:
                if not self._closed:
                    self._count(wall, cpu, q0, q1)
        if self.first is None:
            self.first = (args, result)
        return result

    def _count(self, wall: float, cpu: float, q0: float | None, q1: float | None) -> None:
        # Reading the clocks costs about a microsecond, as much as a cheap call.
        cpu = max(0.0, cpu - _CLOCKS[1])
        wall = max(0.0, wall - _CLOCKS[0])
        self.cpu += cpu
        self.wall += wall
        self.queued += queued_between(q0, q1, wall - cpu)
        self.calls += 1
        if self.wall >= _SAMPLE_SECONDS:
            self._source.until = self._source.position  # take nothing more


class _Probe(Generic[T]):
    """``fn``, recording when each call began and ended and its thread's CPU time.

    Each thread's first call waits (at most ``_PROBE_WAIT``) until the other
    thread has a call too: on a loaded machine a thread may take every item
    before the other is scheduled at all, and nothing would run at once.
    """

    def __init__(self, fn: Callable[..., T]):
        self._fn = fn
        self.began = 0.0  # when both threads had their first call (else, the hand-over)
        self.calls: list[ProbeCall] = []
        self._seen: set[int] = set()
        self._both = threading.Barrier(PROBE_THREADS, action=self._start)
        self.broken = False  # a thread gave up waiting for the other: nothing to tell

    def _start(self) -> None:
        self.began = time.perf_counter()

    def __call__(self, *args: object) -> T:
        thread = threading.get_ident()
        before = 0.0
        if thread not in self._seen:
            self._seen.add(thread)
            arrived = queued()
            try:
                self._both.wait(_PROBE_WAIT)
            except threading.BrokenBarrierError:
                # Go on alone. The wait for the other thread is in this one's time,
                # and is not the GIL: the reading would be wrong, so there is none.
                self.broken = True
            # On a loaded machine a thread may queue long between the hand-over
            # and its first call: that wait is not the GIL either.
            before = queued_between(arrived, queued(), time.perf_counter() - self.began)
        q0 = queued()
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return self._fn(*args)
        finally:
            cpu = time.thread_time() - c0
            end = time.perf_counter()
            waited = queued_between(q0, queued(), end - w0 - cpu)
            self.calls.append(ProbeCall(w0, end, cpu, waited, thread, before))  # append: atomic


def _clock_cost(rounds: int = 200) -> tuple[float, float]:
    """What the clock reads inside one timed call add to its (wall, CPU) time:
    two ``thread_time()`` for the wall time, one for the CPU time. Measured once."""
    begun = time.perf_counter()
    for _ in range(rounds):
        time.thread_time()
    one = (time.perf_counter() - begun) / rounds
    return 2 * one, one


_CLOCKS = _clock_cost()


def _data_per_task(
    fn: Callable[..., object], first: tuple[tuple[object, ...], object] | None, star: bool
) -> int | None:
    """Pickled size of an item and its result; None if they (or fn) do not pickle."""
    from manycore._transport import dumps, dumps_fn

    if first is None:
        return 0  # no call returned: nothing known, nothing against processes
    args, result = first
    try:
        dumps_fn(fn)
        return len(dumps(args if star else args[0])) + len(dumps(result, to_worker=False))
    except Exception:
        return None
