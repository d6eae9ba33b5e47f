"""The runners: one class per way to run the work (a loop, manycore, its peers)."""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from types import ModuleType
from typing import TypeVar

import manycore as mc

T = TypeVar("T")
R = TypeVar("R")

# multiprocessing and ProcessPoolExecutor fork their workers where fork is the default.
FORK_IS_DEFAULT = multiprocessing.get_all_start_methods()[0] == "fork"


def mp_chunksize(n: int, workers: int) -> int:
    """The chunksize ``multiprocessing.Pool.map`` picks: about 4 chunks per worker."""
    chunksize, extra = divmod(n, workers * 4)
    return max(1, chunksize + bool(extra))


class Runner(abc.ABC):
    """One way to run work. ``open`` builds the pool; ``close`` always follows it."""

    name = ""
    requires: str | None = None  # an optional peer package: skipped if missing
    parallel = True
    forks = False  # its workers are forked from this process (the Linux default)
    call_label = ""  # how (e) and (f) run one task
    settings = ""

    def __init__(self, workers: int):
        self.workers = workers

    def open(self) -> None:  # noqa: B027  (optional: most runners start a pool here)
        """Start what the runner needs, outside the timing."""

    @abc.abstractmethod
    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]`` the runner's way."""

    def call(self, fn: Callable[[T], R], x: T) -> R:
        """One ``fn(x)`` round trip (runners with a submit of their own override it)."""
        return self.map(fn, [x])[0]

    def close(self) -> None:  # noqa: B027  (optional)
        """Stop what ``open`` started."""


class Sequential(Runner):
    name = "sequential loop"
    parallel = False
    settings = "`list(map(f, items))` in the parent process (no pool)."

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return list(map(fn, items))


class ManycoreMap(Runner):
    name = "manycore mc.map"
    call_label = "`mc.map(f, [x])[0]` (one-item map)"
    settings = (
        "`mc.map(f, items, workers=N)`; defaults: adaptive chunking, the default start "
        "method (`forkserver` on Linux), "
        "warm default pool (built by the warm-up call), `mc.shutdown_default_pools()` to close."
    )

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return mc.map(fn, items, workers=self.workers)

    def call(self, fn: Callable[[T], R], x: T) -> R:
        return mc.map(fn, [x], workers=self.workers)[0]

    def close(self) -> None:
        mc.shutdown_default_pools()


class ManycorePool(Runner):
    name = "manycore Pool"
    call_label = "`pool.submit(f, x).result()`"
    settings = (
        "`mc.Pool(workers=N)`: `pool.map(f, items)` (adaptive chunking), default start method."
    )

    def open(self) -> None:
        self.pool = mc.Pool(workers=self.workers)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return self.pool.map(fn, items)

    def call(self, fn: Callable[[T], R], x: T) -> R:
        return self.pool.submit(fn, x).result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class MultiprocessingPool(Runner):
    name = "multiprocessing.Pool"
    call_label = "`pool.apply_async(f, (x,)).get()`"
    forks = FORK_IS_DEFAULT
    settings = (
        "`multiprocessing.Pool(N)` with the platform default start method; `pool.map(f, items)` "
        "with its default chunksize (about 4 chunks per worker); `close()` + `join()`."
    )

    def open(self) -> None:
        self.pool = multiprocessing.Pool(self.workers)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return self.pool.map(fn, items)

    def call(self, fn: Callable[[T], R], x: T) -> R:
        return self.pool.apply_async(fn, (x,)).get()

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class FuturesPool(Runner):
    name = "ProcessPoolExecutor"
    call_label = "`executor.submit(f, x).result()`"
    forks = FORK_IS_DEFAULT
    settings = (
        "`ProcessPoolExecutor(max_workers=N)`, platform default start method; "
        "`list(executor.map(f, items, chunksize=c))` with c computed as multiprocessing.Pool "
        "does (ceil(len / (4 N))); `shutdown(wait=True)`."
    )

    def open(self) -> None:
        self.executor = ProcessPoolExecutor(max_workers=self.workers)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        chunksize = mp_chunksize(len(items), self.workers)
        return list(self.executor.map(fn, items, chunksize=chunksize))

    def call(self, fn: Callable[[T], R], x: T) -> R:
        return self.executor.submit(fn, x).result()

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class FuturesForkserver(FuturesPool):
    """The standard library's start method that is safe in a parent that runs threads
    (``fork`` is not; it is the default on Linux before Python 3.14). Only (f) runs it."""

    name = "ProcessPoolExecutor (forkserver)"
    forks = False
    settings = (
        '(f) only: `ProcessPoolExecutor(max_workers=N, mp_context=get_context("forkserver"))`, '
        "the standard library's start method that is safe with threads; `shutdown(wait=True)`."
    )

    def open(self) -> None:
        context = multiprocessing.get_context("forkserver")
        self.executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)


class Joblib(Runner):
    name = "joblib (loky)"
    requires = "joblib"
    call_label = "`parallel([delayed(f)(x)])[0]` (one-item Parallel call)"
    settings = (
        "`Parallel(n_jobs=N)` (loky backend, `batch_size='auto'`, arrays over 1 MB memory-mapped) "
        "kept open as a context manager across calls; `parallel(delayed(f)(x) for x in items)`; "
        "closed by shutting down loky's reusable executor."
    )

    def open(self) -> None:
        self.jobs = peer("joblib").Parallel(n_jobs=self.workers)
        self.jobs.__enter__()

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        delayed = peer("joblib").delayed
        return list(self.jobs(delayed(fn)(x) for x in items))

    def call(self, fn: Callable[[T], R], x: T) -> R:
        out: R = self.jobs([peer("joblib").delayed(fn)(x)])[0]  # (untyped)
        return out

    def close(self) -> None:
        reusable_executor = peer("joblib.externals.loky.reusable_executor")
        try:
            self.jobs.__exit__(None, None, None)
        finally:
            executor = reusable_executor._executor  # noqa: SLF001 - loky's one shared executor
            if executor is not None:
                executor.shutdown(wait=True)


class Mpire(Runner):
    name = "mpire"
    requires = "mpire"
    call_label = "`pool.apply_async(f, (x,)).get()`"
    forks = True  # mpire's default start method
    settings = (
        "`WorkerPool(n_jobs=N, keep_alive=True)` (default `fork`; keep_alive so the workers stay "
        "up between calls); `pool.map(f, items)` with its default chunking (4 chunks per "
        "worker); `stop_and_join()`."
    )

    def open(self) -> None:
        self.pool = peer("mpire").WorkerPool(n_jobs=self.workers, keep_alive=True)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return list(self.pool.map(fn, items))

    def call(self, fn: Callable[[T], R], x: T) -> R:
        out: R = self.pool.apply_async(fn, (x,)).get()  # (untyped)
        return out

    def close(self) -> None:
        try:
            self.pool.stop_and_join()
        finally:
            self.pool.terminate()


class Pebble(Runner):
    name = "pebble"
    requires = "pebble"
    forks = FORK_IS_DEFAULT
    call_label = "`pool.schedule(f, (x,)).result()`"
    settings = (
        "`pebble.ProcessPool(max_workers=N)` (platform default start method); "
        "`list(pool.map(f, items, chunksize=c).result())` with c as multiprocessing.Pool "
        "picks it; `close()` + `join()`."
    )

    def open(self) -> None:
        self.pool = peer("pebble").ProcessPool(max_workers=self.workers)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        chunksize = mp_chunksize(len(items), self.workers)
        return list(self.pool.map(fn, items, chunksize=chunksize).result())

    def call(self, fn: Callable[[T], R], x: T) -> R:
        out: R = self.pool.schedule(fn, (x,)).result()  # (untyped)
        return out

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


RUNNERS: list[type[Runner]] = [
    Sequential,
    ManycoreMap,
    ManycorePool,
    MultiprocessingPool,
    FuturesPool,
    Joblib,
    Mpire,
    Pebble,
]
COLD_ONLY: list[type[Runner]] = [FuturesForkserver]  # extra rows of (f)
MANYCORE_REF = ManycoreMap.name  # the "vs manycore" column of (a)-(d)


def peer(module: str) -> ModuleType:
    """A peer's module, imported when its runner opens (joblib and mpire are optional,
    and untyped here)."""
    return importlib.import_module(module)


def installed(runner: type[Runner]) -> bool:
    if runner.requires is None:
        return True
    try:
        importlib.metadata.version(runner.requires)
        __import__(runner.requires)
    except ImportError:
        return False
    return True


@contextmanager
def opened(runner: Runner) -> Iterator[Runner]:
    runner.open()
    try:
        yield runner
    finally:
        runner.close()
