"""The one small interface every backend implements, and the registry by name.

A backend runs batches somewhere and reports each outcome; it owns no policy
(ordering, chunking, error handling live in the scheduler). Adding a backend is a
subclass plus :func:`register_backend`; the scheduler does not change.
"""

from __future__ import annotations

import abc
import functools
import importlib
import inspect
import types
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

from manycore._core import AwaitableFuture, Batch, Done, cpu_budget, public

__all__ = [
    "DEFAULT_BACKEND",
    "Backend",
    "BackendOptions",
    "Done",
    "backend_for",
    "backend_names",
    "get_backend",
    "register_backend",
]


@public
@dataclass(frozen=True)
class BackendOptions:
    workers: int
    start_method: str | None = None
    init: Callable[..., object] | None = None
    init_args: tuple[object, ...] = ()
    max_tasks_per_worker: int | None = None
    max_memory_per_worker: int | None = None  # bytes
    blas_threads: int | None = None  # threads per BLAS/OpenMP library in each worker
    exit: Callable[..., object] | None = None  # runs in each worker as it stops
    shared: object = None  # the object mc.shared() returns in tasks
    address: str | None = None  # a cluster to connect to (dask, ray)
    # GPUs the workers share: a count, or device ids (see manycore.backends._gpus)
    gpus: int | tuple[int, ...] | None = None
    # An existing distributed.Client to use (dask): typed where dask is, not here.
    client: Any = None
    thread_name_prefix: str | None = None  # threads: named f"{prefix}_{slot}"


@public
class Backend(abc.ABC):
    """Runs :class:`Batch` objects and calls ``done`` once for each.

    ``done(batch, result)`` receives a :class:`BatchResult`, or an exception that
    fails the whole batch (a crashed worker, ``CancelledError``). It may be called
    from any thread, and from inside :meth:`submit` itself.
    """

    name: ClassVar[str]
    #: the batch's items and function must be picklable (checked before work starts)
    needs_pickling: ClassVar[bool] = False
    #: a running task can be stopped (its worker killed, its coroutine cancelled)
    supports_kill: ClassVar[bool] = False
    #: workers can be replaced while the pool runs (max_tasks_per_worker, ...)
    replaces_workers: ClassVar[bool] = False
    #: the options of mc.Pool/mc.map, beyond those every backend takes, that this
    #: backend accepts (the others are refused, naming a backend that takes them)
    accepts: ClassVar[frozenset[str]] = frozenset()
    #: several batches can run at the same time
    concurrent: ClassVar[bool] = True
    #: items mostly wait (asyncio) rather than compute: batching them would only
    #: hold results back, so the scheduler sends one per batch unless told otherwise
    one_item_per_batch: ClassVar[bool] = False
    #: a timed run goes one item per batch (the backend times batches, not items)
    one_item_when_timed: ClassVar[bool] = False
    #: how long a batch should take: long enough that per-batch overhead is small
    batch_seconds: ClassVar[float] = 0.02
    #: a batch is at most this many times the largest that has finished (sizes grow
    #: with measurements: one noisy measurement cannot make a giant batch)
    batch_growth: ClassVar[int] = 4
    #: what a batch costs beyond its items' work (a remote task's round trip): the
    #: scheduler plans no batch so small that this dominates it
    batch_overhead: ClassVar[float] = 0.0
    #: a map of known length opens with one big batch per worker instead of
    #: one-item probes, each stopping after this many seconds (``Batch.budget``)
    #: with the rest of its items unrun; None: one-item probes (no round trip to save)
    opening_budget: ClassVar[float | None] = None
    #: results name their worker by slot, 0..workers-1 (pool.stats() lists every
    #: slot, idle ones too); else by a name of the backend's (a cluster address)
    numbered_workers: ClassVar[bool] = True

    #: (module, what to pip install) when the backend's engine is a package of its
    #: own, which ``manycore info`` looks for; None: always ready
    needs_package: ClassVar[tuple[str, str] | None] = None

    def __init__(self, options: BackendOptions):
        self.options = options

    @property
    def workers(self) -> int:
        return self.options.workers

    @classmethod
    def check_options(cls, workers: int | None, given: Mapping[str, object]) -> int | None:
        """Check ``given``, this backend's own options that were set (names from
        :attr:`accepts`), with ``workers`` (None: the default), before any work:
        errors name the argument. Returns the worker count they imply."""
        return workers

    @classmethod
    def misplaced(cls, name: str, value: object, backend: str) -> str:
        """Why option ``name`` (one this backend accepts) was refused on ``backend``."""
        return f"{name}={value!r:.80} applies only to backend={cls.name!r}, not {backend!r}"

    @classmethod
    def default_workers(cls) -> int:
        """Workers when none are asked for: the CPUs this process may use (in a
        worker process, its share)."""
        return cpu_budget()

    @classmethod
    def describe(cls) -> dict[str, object]:
        """Facts of this machine that ``manycore info`` adds for this backend."""
        return {}

    @classmethod
    def check_fn(cls, fn: Callable[..., object]) -> None:
        """Refuse, before any work, a function this backend cannot run (a TypeError
        naming ``fn``). By default: an ``async def`` function, which would only
        return coroutine objects here. A class method: ``mc.map`` asks before it
        starts a pool."""
        if is_async_callable(fn):
            raise TypeError(
                f"fn is an async function (async def); backend={cls.name!r} would only "
                "create coroutine objects: use backend='asyncio'"
            )

    def make_sync(self, kind: str, args: tuple[object, ...]) -> object:
        """A lock, semaphore, value, counter or queue (``kind``) that this
        backend's tasks can share: the machine-wide ones of ``manycore._transport._sync``."""
        from manycore._transport import sync_primitives

        return getattr(sync_primitives, kind)(*args)

    @abc.abstractmethod
    def submit(self, batch: Batch, done: Done) -> None:
        """Start ``batch`` (or queue it); raise at once if it cannot be accepted."""

    def result_ref(self, batch: Batch) -> object:
        """A handle to ``batch``'s one result where it was computed (a cluster keeps
        it there for a task graph's next task); None: results travel back."""
        return None

    def origin(self) -> object:
        """Where a ``submit()`` made now, in this thread, is waited for: stamped on
        its batches (``Batch.origin``, retries too). None: nowhere in particular
        (the asyncio backend names the event loop that awaits the future)."""
        return None

    def runs_here(self, batch: Batch) -> bool:
        """``batch`` runs on the event loop of the calling thread: a blocking wait
        for it here would wait forever (the asyncio backend's, awaited there)."""
        return False

    def new_future(self, origin: object = None) -> Future[object]:
        """The future that ``submit()`` returns (a backend may wait on it smarter);
        ``origin``: what :meth:`origin` said for this call."""
        return AwaitableFuture()

    def cancel(self, batch: Batch) -> bool:
        """Drop a batch that has not started; True if it was dropped."""
        return False

    def kill(self, batch: Batch) -> bool:
        """Stop a batch even if it runs (backends with ``supports_kill``); its
        ``done`` gets CancelledError. True if it will not complete."""
        return self.cancel(batch)

    @abc.abstractmethod
    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Stop accepting work; with ``wait``, return once everything has finished."""

    def drive(self, ready: Callable[[], bool], deadline: float | None = None) -> bool:
        """Do this backend's I/O in the calling thread until ``ready()`` (or the
        ``time.monotonic()`` ``deadline``).

        An engine that can (the process engine) saves a hand-off between threads
        per result this way. False means the caller must block normally, inside
        :meth:`passive`.
        """
        return False

    def passive(self) -> AbstractContextManager[None]:
        """Context around a caller's ordinary blocking wait for this backend."""
        return nullcontext()

    def wake(self) -> None:
        """A future was settled outside this backend (a retry that could not be
        sent): wake any thread polling for it."""
        return None  # only a backend whose callers poll it needs to do anything

    def terminate(self) -> None:
        """Stop now: cancel what waits, and kill what runs where the engine can."""
        self.shutdown(wait=False, cancel_pending=True)

    def pids(self) -> list[int]:
        """Process ids of the workers, where the backend has processes."""
        return []

    def restarts(self) -> dict[int | str, int]:
        """Times each worker slot was replaced since the backend started."""
        return {}


# Callables of these exact types never return a coroutine.
_NEVER_ASYNC = frozenset({types.BuiltinFunctionType, types.MethodWrapperType})


def is_async_callable(fn: object) -> bool:
    """``fn(...)`` returns a coroutine: an ``async def`` function or method, a
    ``functools.partial`` of one, or an object whose ``__call__`` is one."""
    # The common cases first: this is asked on every submit.
    if isinstance(fn, types.FunctionType):  # what iscoroutinefunction() asks of one, in short
        flagged = fn.__code__.co_flags & inspect.CO_COROUTINE
        return bool(flagged) or (bool(fn.__dict__) and inspect.iscoroutinefunction(fn))
    if type(fn) in _NEVER_ASYNC:
        return False
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    # An instance whose class defines ``async def __call__``.
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


# The built-in backends, imported on first use by name: importing the registry
# must not start loading engines (the process engine, dask, ray).
_BUILT_IN = {
    "serial": "manycore.backends.serial",
    "threads": "manycore.backends.threads",
    "asyncio": "manycore.backends.aio",
    "processes": "manycore.backends.processes",
    "dask": "manycore.backends.cluster_dask",
    "ray": "manycore.backends.cluster_ray",
    "mpi": "manycore.backends.mpi",
    "celery": "manycore.backends.celery",
    "ipyparallel": "manycore.backends.ipyparallel",
    "spark": "manycore.backends.spark",
}
_REGISTRY: dict[str, type[Backend]] = {}

# The backend of each kind, for where manycore picks one itself: the default
# ("process"), an async function's ("coroutine"), backend="auto"'s choices.
_KINDS = {"process": "processes", "thread": "threads", "coroutine": "asyncio", "inline": "serial"}


def backend_for(kind: str) -> str:
    """The name of the built-in backend of ``kind``: "process", "thread",
    "coroutine" or "inline"."""
    return _KINDS[kind]


#: the backend of a pool or call that names none
DEFAULT_BACKEND = backend_for("process")


@public
def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make ``cls`` available as ``backend=cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def refuse_option(name: str, value: object, backend: str) -> ValueError:
    """The error for option ``name``, which ``backend`` does not accept, worded by
    a backend that does (the default backend first)."""
    for other in (DEFAULT_BACKEND, *backend_names()):
        cls = get_backend(other)
        if name in cls.accepts:
            return ValueError(cls.misplaced(name, value, backend))
    return ValueError(f"{name}= is not an option of backend={backend!r}")


@public
def backend_names() -> list[str]:
    return sorted({*_BUILT_IN, *_REGISTRY})


def get_backend(name: str) -> type[Backend]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    if isinstance(name, str) and name in _BUILT_IN:
        importlib.import_module(_BUILT_IN[name])  # registers it
        return _REGISTRY[name]
    valid = ", ".join(repr(n) for n in backend_names())
    message = f"backend={name!r} is not a known backend; choose one of {valid}"
    raise ValueError(message) from None
