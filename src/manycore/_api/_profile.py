"""``mc.profile(fn, items)``: measure what parallelism buys a function, and say why.

It runs a sample of ``items`` sequentially (wall and CPU time of each call, less
any wait for a CPU that other programs kept busy), then
on each backend at several worker counts (1, 2, 4, ... up to the workers usable),
each on a pool started and warmed beforehand so that start-up is reported apart
from the per-map time. From those runs :func:`manycore._observe._recommend.decide` picks
the backend and worker count; :class:`~manycore._observe._profile_report.Profile` holds
the figures, prints and plots them.

Every timing is the best of two runs: on a shared machine another program's
burst of work only ever adds time. Time is bounded: the default sample is about
``_TARGET`` seconds of sequential work (more items if needed to keep every
worker busy, at most ``_MAX_SAMPLE`` items or ``_SEQ_LIMIT`` seconds), a backend
stops adding workers once they stop helping, and runs that would end past
``_BUDGET`` seconds are skipped (a note says so). A default call takes about
3-8 s on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from manycore._api import _validate as v
from manycore._core import public
from manycore._observe import (
    BackendNames,
    Measurements,
    Profile,
    ProfileRow,
    Run,
    decide,
    queued,
    queued_all,
    queued_between,
)
from manycore.backends import backend_for, get_backend, is_async_callable

if TYPE_CHECKING:
    from manycore._api._pool import Pool

__all__ = ["Profile", "ProfileRow", "profile"]

# The backends profiled, by kind: the registry names them.
_INLINE, _THREADS, _PROCESSES, _ASYNC = (
    backend_for(kind) for kind in ("inline", "thread", "process", "coroutine")
)
_NAMES = BackendNames.of(backend_for)  # for the recommendation and the report
_DEFAULT_BACKENDS = (_INLINE, _THREADS, _PROCESSES)
_PROFILED = (_ASYNC, _PROCESSES, _INLINE, _THREADS)  # what runs on this machine
_TARGET = 0.5  # seconds of sequential work the default sample aims at
_REPEATS = 2  # every timing is the best of this many runs (the sequential one too)
_SEQ_LIMIT = 2.0  # ... and past which it stops growing, even if short of items
_MAX_SAMPLE = 2000
_MIN_SAMPLE = 2
_BUDGET = 10.0  # seconds: later runs that would end past this are skipped
_START_GUESS = 0.3  # seconds to start a process pool, for the budget check only
_ASYNC_MAX = 64  # the largest concurrency tried for an async function
_BLOCK_SECONDS = 0.01  # sequential calls are timed in blocks of about this much work
_KEEP = 8  # results kept from the sequential run, to size the data a task moves
_CLOSE = 1.10  # a count not 10% faster than the one before: more workers stopped helping


@public
def profile(
    fn: Callable[..., object],
    items: Iterable[object],
    *,
    backends: Sequence[str] = _DEFAULT_BACKENDS,
    workers: int | None = None,
    sample: int | None = None,
    star: bool = False,
) -> Profile:
    """Run a sample of ``items`` through ``fn`` sequentially and in parallel, and
    recommend how to run it (``backend``, ``workers``, ``chunksize``, and why).

    ``backends``: which to try, among "serial" (the plain loop, always measured
    as the baseline), "threads" and "processes"; an ``async def`` ``fn`` is
    profiled on "asyncio". ``workers``: the largest worker count tried (default:
    the usable CPUs for processes, the threads pool's default for threads).
    ``sample``: how many items to use (default: about 1 s of sequential work).
    ``star``: each item is an argument tuple, as for ``mc.starmap``. ``fn`` is
    called many times (sequentially, then again on each backend): it must be
    safe to repeat. See :class:`Profile` for what is measured.
    """
    started = time.perf_counter()
    is_async, backends = _check(fn, items, backends, workers, sample, star)
    from manycore._core import usable_cpus

    notes = _busy(usable_cpus())
    counts = {b: _worker_counts(b, workers) for b in backends if b != _INLINE}
    least = max([_MIN_SAMPLE, *(2 * max(c) for c in counts.values())])
    taken = _sequential(fn, items, star, sample, least, is_async)
    counts = {b: _capped(c, len(taken.items)) for b, c in counts.items()}
    moved: int | None = 0
    if _PROCESSES in counts:
        moved = _data_per_task(fn, taken, star)
        if moved is None:
            del counts[_PROCESSES]
            notes.append("processes skipped: fn, an item or a result cannot be pickled")
    runs = _parallel(fn, taken, star, counts, started, notes)
    measured = Measurements(
        len(taken.items),
        taken.wall,
        taken.cpu,
        tuple(runs),
        moved,
        is_async,
        backends,
        queued=taken.queued,
        names=_NAMES,
    )
    recommendation = decide(measured)
    elapsed = time.perf_counter() - started
    batch_seconds = get_backend(recommendation.backend).batch_seconds
    return Profile(
        _name(fn), measured, recommendation, notes, elapsed, usable_cpus(), batch_seconds
    )


def _check(
    fn: Any, items: Any, backends: Any, workers: Any, sample: Any, star: Any
) -> tuple[bool, tuple[str, ...]]:
    """Every argument checked before any work: (fn is async, backends to profile)."""
    v.check_callable(fn, "fn")
    if not isinstance(items, Iterable):
        raise TypeError(
            f"items must be iterable (a list, range, generator, ...), got {type(items).__name__}"
        )
    v.check_positive_int(workers, "workers")
    v.check_positive_int(sample, "sample")
    v.check_bool(star, "star")
    if isinstance(items, Sequence) and not isinstance(items, str) and len(items) == 0:
        raise ValueError("items is empty: profile needs at least one item to run fn on")
    if isinstance(backends, str) or not isinstance(backends, Iterable):
        raise TypeError(f"backends must be a tuple of backend names, got {backends!r:.80}")
    names = tuple(backends)
    if not names:
        raise ValueError("backends is empty: name at least one, e.g. ('threads', 'processes')")
    for name in names:
        if name not in _PROFILED:
            v.check_backend(name)  # an unknown name: the usual error, listing the backends
            raise ValueError(
                f"backends: {name!r} runs elsewhere; profile measures this machine's "
                f"backends: {', '.join(repr(n) for n in _PROFILED)}"
            )
    is_async = is_async_callable(fn)
    if is_async:
        if names == _DEFAULT_BACKENDS:
            return True, (_ASYNC,)
        if set(names) != {_ASYNC}:
            raise TypeError(
                "fn is an async function (async def): only backend 'asyncio' can run it; "
                "leave backends= out or pass backends=('asyncio',)"
            )
    elif _ASYNC in names:
        raise TypeError(
            "backends: 'asyncio' runs async functions (async def), and fn is a plain one"
        )
    return is_async, tuple(dict.fromkeys(names))


def _busy(cpus: int) -> list[str]:
    """A note if other work already kept the CPUs busy: it competes with the
    parallel runs (not with the sequential one, on a free CPU), so speedups read low."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return []
    if load < 0.5 * cpus:
        return []
    return [
        f"the machine was busy before profiling (load average {load:.1f} on {cpus} CPUs): "
        "other work competes with the parallel runs, so speedups may read low"
    ]


def _worker_counts(backend: str, workers: int | None) -> list[int]:
    """1, 2, 4, ... up to the largest count to try (itself included)."""
    from manycore._api._options import default_workers

    if workers is not None:
        top = workers
    elif backend == _ASYNC:
        top = _ASYNC_MAX
    else:
        top = default_workers(backend)
    step = 4 if backend == _ASYNC else 2  # coroutines are cheap: fewer, wider steps
    counts, n = [], 1
    while n < top:
        counts.append(n)
        n *= step
    return [*counts, top]


def _capped(counts: list[int], items: int) -> list[int]:
    """No more workers than items: the extra ones would have nothing to do."""
    kept = [n for n in counts if n < items]
    return [*kept, min(counts[-1], items)] if counts[-1] >= items else counts


@dataclass
class _Sample:
    items: list[Any]  # as given: under star=True, each an iterable of arguments
    wall: float  # total sequential wall time of the calls
    cpu: float  # ... and their CPU time
    results: list[object]  # the first results, to size the data a task moves
    queued: float = 0.0  # of wall: waiting for a CPU that other programs kept busy


def _sequential(
    fn: Callable[..., Any],  # (async: it returns an awaitable)
    items: Iterable[object],
    star: bool,
    sample: int | None,
    least: int,
    is_async: bool,
) -> _Sample:
    """Run the sample one call at a time, twice (an async fn on an event loop of
    a thread of its own: the caller may be inside a running loop, as in Jupyter)."""

    def twice(call: Callable[..., object]) -> _Sample:
        # The faster of two passes: another program's burst of work on a shared
        # machine only ever adds time. Both run the same items.
        first = _loop(call, items, star, sample, least)
        again = _loop(call, first.items, star, len(first.items), least)
        if first.wall <= again.wall:
            return first
        return dataclasses.replace(again, results=first.results)

    if not is_async:
        return twice(fn)

    def on_own_loop() -> _Sample:
        loop = asyncio.new_event_loop()
        try:
            return twice(lambda *a: loop.run_until_complete(fn(*a)))
        finally:
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(1, "manycore-profile") as ex:
        return ex.submit(on_own_loop).result()


def _loop(
    call: Callable[..., object], items: Iterable[Any], star: bool, sample: int | None, least: int
) -> _Sample:
    """Calls in blocks that double while short: reading the clocks costs about a
    microsecond (thread_time is a system call), as much as a cheap call itself."""
    taken: list[Any] = []
    results: list[object] = []
    wall = cpu = waited = 0.0
    source = iter(items)
    limit = sample or _MAX_SAMPLE
    block = 1
    while len(taken) < limit:
        # The default sample: about _TARGET seconds of work, and items enough for
        # every worker count tried; never past _SEQ_LIMIT seconds (slow calls).
        if sample is None and (
            (wall >= _TARGET and len(taken) >= least)
            or (wall >= _SEQ_LIMIT and len(taken) >= _MIN_SAMPLE)
        ):
            break
        chunk = list(itertools.islice(source, min(block, limit - len(taken))))
        if not chunk:
            break
        q0 = queued()
        w0, c0 = time.perf_counter(), time.thread_time()
        out = [call(*item) for item in chunk] if star else [call(item) for item in chunk]
        used = time.thread_time() - c0
        spent = time.perf_counter() - w0
        waited += queued_between(q0, queued(), spent - used)
        cpu += used
        wall += spent
        taken += chunk
        results += out[: _KEEP - len(results)]
        if spent < _BLOCK_SECONDS:
            block *= 2
    if not taken:
        raise ValueError("items is empty: profile needs at least one item to run fn on")
    return _Sample(taken, wall, cpu, results, waited)


def _data_per_task(fn: Callable[..., object], taken: _Sample, star: bool) -> int | None:
    """Mean pickled size of an item and its result, as the process engine sends
    them; None if ``fn``, an item or a result does not pickle."""
    from manycore._transport import dumps, dumps_fn

    try:
        dumps_fn(fn)
        sizes = [
            len(dumps(tuple(item) if star else item)) + len(dumps(result, to_worker=False))
            for item, result in zip(taken.items, taken.results, strict=False)
        ]
    except Exception:
        return None
    return round(sum(sizes) / len(sizes))


def _parallel(
    fn: Callable[..., object],
    taken: _Sample,
    star: bool,
    counts: dict[str, list[int]],
    started: float,
    notes: list[str],
) -> list[Run]:
    """Each backend at each worker count, cheapest backend first; a backend stops
    adding workers once they stop helping, and nothing starts past the budget."""
    runs: list[Run] = []
    for backend in _NAMES.cheapest_first(list(counts)):
        previous = 0.0
        for n in counts[backend]:
            guess = _REPEATS * taken.wall / n + (_START_GUESS if backend == _PROCESSES else 0.0)
            if time.perf_counter() - started + guess > _BUDGET:
                notes.append(
                    f"{backend} from {n} workers on skipped: profiling would pass its "
                    f"{_BUDGET:g} s budget (pass a smaller sample=)"
                )
                break
            run = _measure(backend, n, fn, taken.items, star)
            runs.append(run)
            speedup = taken.wall / run.seconds if run.seconds > 0 else float("inf")
            if n > 1 and speedup < previous * _CLOSE and n < counts[backend][-1]:
                notes.append(
                    f"{backend}: {n} workers ran no faster than {runs[-2].workers}; "
                    "larger counts not tried"
                )
                break
            previous = speedup
    return runs


def _measure(backend: str, n: int, fn: Callable[..., object], items: list[Any], star: bool) -> Run:
    """The sample on a fresh pool of ``n`` workers, timed once the pool is warm.

    On threads, the process's CPU time over the run is the CPU time of the calls
    (the pool's own threads barely use any): divided by the wall time, the CPUs
    kept busy at once, about 1 for a function that holds the GIL. Read around
    the run rather than around each call, which would cost a microsecond a call;
    so is the threads' wait for a CPU that other programs kept busy (a loaded
    machine must not read as a held GIL).
    """
    from manycore._api._pool import Pool

    begun = time.perf_counter()
    with Pool(n, backend=backend) as pool:
        if backend == _PROCESSES:
            # Start-up, not per-map time: workers importing fn's module (and what
            # it imports) on their first call; one item each.
            _map(pool, fn, items[:n], star, chunksize=1)
        startup = time.perf_counter() - begun
        timings = []
        for _ in range(_REPEATS):  # the fastest counts: noise only ever adds time
            q0, c0, t0 = queued_all(), time.process_time(), time.perf_counter()
            _map(pool, fn, items, star)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            waited = queued_between(q0, queued_all(), n * seconds - cpu)
            timings.append((seconds, cpu, waited))
    seconds, cpu, waited = min(timings)
    if backend != _THREADS:
        return Run(backend, n, seconds, None, startup)
    return Run(backend, n, seconds, cpu, startup, queued=waited)


def _map(
    pool: Pool,
    fn: Callable[..., object],
    items: list[Any],
    star: bool,
    chunksize: int | None = None,
) -> None:
    if star:
        pool.starmap(fn, items, chunksize=chunksize)
    else:
        pool.map(fn, items, chunksize=chunksize)


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))
