"""``@mc.task`` itself, and waiting on many futures (``mc.wait``,
``mc.as_completed``). How a task call runs: see :mod:`manycore._tasks._nodes`."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import as_completed as _as_completed
from concurrent.futures import wait as _wait
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, ParamSpec, TypeVar, overload

from manycore._api import PoolState, validate
from manycore._core import AwaitableFuture, bad_wait_timeout, public, task_state
from manycore._tasks._nodes import TaskFuture, TaskNode, help_along, next_key, run_here
from manycore._tasks._run import current_pool, futures_in
from manycore._transport import PROTOCOL, by_reference, dumps_fn, loads_code, pinned, with_shipments
from manycore.backends import DEFAULT_BACKEND

if TYPE_CHECKING:
    from manycore._api import Lease, Pool

__all__ = ["DoneAndNotDone", "Task", "as_completed", "task", "wait"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """A task's options, checked (see :func:`task`); ``name`` is always set."""

    name: str
    timeout: float | None = None
    retries: int | None = None
    retry_on: tuple[type[BaseException], ...] | None = None
    backend: str | None = None
    pool: Pool | None = None

    def under(self, given: Mapping[str, object]) -> dict[str, object]:
        """For a task made of this task: the options ``given`` (those not None,
        a non-empty name), the rest this task's; a new ``backend`` or ``pool``
        replaces both. Unchecked: :func:`task_options` checks them."""
        new = {key: value for key, value in given.items() if value is not None}
        base = self
        if "backend" in new or "pool" in new:
            base = dataclasses.replace(self, backend=None, pool=None)
        return {**vars(base), **new, "name": given.get("name") or self.name}

    def travelling(self) -> TaskOptions:
        """What a task pickled by value keeps: a pool does not travel (nor the
        backend of its default one): the task runs in place where it is unpickled."""
        return dataclasses.replace(self, backend=None, pool=None)


def task_options(fn: Callable[..., object], given: Mapping[str, object]) -> TaskOptions:
    """``given`` (a task's options by name, as the user gave them) checked, the
    first bad one reported in this order; ``name`` defaults to ``fn``'s."""
    timeout, retries, retry_on = (given.get(key) for key in ("timeout", "retries", "retry_on"))
    limits = (
        None if timeout is None else validate.check_timeout(timeout),
        None if retries is None else validate.check_count(retries, "retries"),
        None if retry_on is None else validate.check_exception_types(retry_on, "retry_on"),
    )
    backend, pool = _checked_place(given.get("backend"), given.get("pool"))
    name = given.get("name")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    label = name or getattr(fn, "__name__", None) or type(fn).__name__
    return TaskOptions(label, *limits, backend, pool)


def _checked_place(backend: object, pool: object) -> tuple[str | None, Pool | None]:
    """Where a task's calls go: a backend's default pool, or a pool (not both)."""
    from manycore._api import Pool

    if backend is not None and pool is not None:
        raise ValueError("give a task backend= or pool=, not both")
    if pool is None or isinstance(pool, Pool):
        return (None if backend is None else validate.check_backend(backend)), pool
    raise TypeError(f"pool must be a manycore.Pool, got {type(pool).__name__}")


@public
class Task(Generic[P, R]):
    """A function made into a task by :func:`manycore.task`. Calling it schedules
    the call and returns a :class:`TaskFuture` at once."""

    fn: Callable[P, R]
    settings: TaskOptions  # its options, checked (read them as attributes: task.timeout)

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        timeout: float | None = None,
        retries: int | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        backend: str | None = None,
        pool: Pool | None = None,
        name: str | None = None,
    ):
        validate.check_callable(fn, "fn")
        args = locals()  # the options by name: each is named once, in the signature
        given: dict[str, object] = {key: args[key] for key in OPTIONS}
        if isinstance(fn, Task):  # a task of a task: its options, updated by these
            inner: Task[P, R] = fn
            fn, given = inner.fn, inner.settings.under(given)
        self.fn = fn
        self.settings = task_options(fn, given)
        self._blob: bytes | None = None
        self._by_value: tuple[bytes, bytes] | None = None  # (fn pickled, call pickled)
        # Name and docstring of the function, but not its __dict__: attributes
        # of the function must not replace this task's options.
        functools.update_wrapper(self, fn, updated=())

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def timeout(self) -> float | None:
        return self.settings.timeout

    @property
    def retries(self) -> int | None:
        return self.settings.retries

    @property
    def retry_on(self) -> tuple[type[BaseException], ...] | None:
        return self.settings.retry_on

    @property
    def backend(self) -> str | None:
        return self.settings.backend

    @property
    def pool(self) -> Pool | None:
        return self.settings.pool

    def __repr__(self) -> str:
        return f"<manycore.Task {self.name!r}>"

    def options(self, **changes: Any) -> Task[P, R]:
        """The same function as a task with some options changed, e.g.
        ``load.options(timeout=5)(path)`` or ``load.options(pool=pool)``."""
        _check_options(changes, "options")
        current = dict(vars(self.settings))
        if "pool" in changes:
            current["backend"] = None
        if "backend" in changes:
            current["pool"] = None
        current.update(changes)
        return Task(self.fn, **current)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[R]:
        if task_state.context() == "process":
            return run_here(self, args, kwargs)
        inputs = futures_in((args, kwargs))
        deps = [f.node for f in inputs if isinstance(f, TaskFuture)]
        future: TaskFuture[R] = TaskFuture(self, TaskNode(next_key(), self.name, deps))
        future._start(self._chosen_pool(), args, kwargs, inputs)  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other
        return future

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        """The plain call, in a worker (pickled as a method of the task, which
        travels by reference when its module can be imported)."""
        return self.fn(*args, **kwargs)

    async def _acall(self, *args: Any, **kwargs: Any) -> Any:
        """The plain call of an ``async def`` task (on backend="asyncio")."""
        return await self.fn(*args, **kwargs)  # type: ignore[misc]

    def _pickled_call(self) -> bytes:
        """:meth:`_call` pickled for a worker. By reference: once, for every call.
        By value (a script's function): the function goes through ``dumps_fn``,
        which pickles it again only when its code or globals change, wrapped in a
        few bytes that rebuild the task's call in the worker."""
        blob = self._blob
        if blob is not None:
            return blob
        if by_reference(self._call):
            blob = self._blob = dumps_fn(self._call)
            return blob
        inner = dumps_fn(self.fn)
        last = self._by_value
        if last is not None and last[0] == inner:
            sent = pinned(last[1])
            if sent is not None:
                return sent
        options = self.settings.travelling()
        # The large globals the function reads travel apart (see _bigglobals);
        # what is kept here must not hold them (bytes(inner) drops its pins).
        blob = with_shipments(pickle.dumps(_CallByValue(inner, options), PROTOCOL), inner)
        self._by_value = (bytes(inner), blob)
        return pinned(blob) or blob

    def _chosen_pool(self) -> Pool | None:
        """The pool a call goes to, as far as the caller's thread decides it:
        ``pool=``, or the pool of the task making the call; None for the
        default pool, looked up when the call is sent (default pools come and go)."""
        if self.pool is not None:
            return self.pool
        if self.backend is None:
            pool = current_pool()
            if pool is not None and pool.state is PoolState.RUNNING:
                return pool
        return None

    def _default_pool(self) -> Lease:
        """The default pool for this task's backend, held (a lease) until the
        call settles, so that evicting it meanwhile does not close it under us."""
        from manycore._api import lease_default_pool

        return lease_default_pool(self.backend or DEFAULT_BACKEND, None, None)

    def __reduce__(self) -> tuple[object, ...]:
        module = getattr(self.fn, "__module__", None)
        qualname = getattr(self.fn, "__qualname__", "")
        if module not in (None, "__main__") and "<locals>" not in qualname:
            try:
                if _lookup(module, qualname) is self:
                    return (_lookup, (module, qualname))
            except (ImportError, AttributeError):
                pass
        # By value (a script's or a local task).
        return (_rebuild_task, (self.fn, self.settings.travelling()))


def _lookup(module: str, qualname: str) -> object:
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _rebuild_task(fn: Callable[..., Any], options: TaskOptions) -> Task[Any, Any]:
    return Task(fn, **vars(options))


class _CallByValue:
    """Pickles as "load this function, make it a task, take its call"."""

    def __init__(self, fn_blob: bytes, options: TaskOptions):
        self.fn_blob = fn_blob
        self.options = options

    def __reduce__(self) -> tuple[object, ...]:
        return (_call_by_value, (self.fn_blob, self.options))


def _call_by_value(fn_blob: bytes, options: TaskOptions) -> Callable[..., object]:
    return _rebuild_task(loads_code(fn_blob), options)._call  # noqa: SLF001 - task nodes, futures and tasks of this layer work on each other


# -------------------------------------------------------------- the decorator

OPTIONS = tuple(field.name for field in dataclasses.fields(TaskOptions))


def _check_options(given: dict[str, object], where: str) -> None:
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise TypeError(f"{where}() got unexpected options: {', '.join(sorted(unknown))}")


@overload
def task(
    fn: Callable[P, R],
    /,
    *,
    timeout: float | None = None,
    retries: int | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    backend: str | None = None,
    pool: Pool | None = None,
    name: str | None = None,
) -> Task[P, R]: ...


@overload
def task(
    *,
    timeout: float | None = None,
    retries: int | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    backend: str | None = None,
    pool: Pool | None = None,
    name: str | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


@public
def task(fn: Any = None, /, **options: Any) -> Any:
    """Make ``fn`` a task: calling it returns a :class:`TaskFuture` at once and
    runs the call on a pool; futures among its arguments (also inside lists,
    tuples and dict values) are waited for and replaced by their results.

    Use bare (``@mc.task``), with options (``@mc.task(timeout=5)``), or as a
    call (``mc.task(fn, pool=pool)``). Options: ``timeout``, ``retries``,
    ``retry_on`` (as for ``Pool.submit``), ``backend`` (its default pool, like
    ``mc.map``; ``"processes"`` unless given) or ``pool`` (a :class:`Pool`),
    and ``name`` (shown in errors and by :func:`manycore.graph`).
    """
    _check_options(options, "task")
    if fn is None:
        return lambda f: Task(f, **options)
    return Task(fn, **options)


# ------------------------------------------------------------ waiting on many


class DoneAndNotDone(NamedTuple):
    done: set[Future[Any]]
    not_done: set[Future[Any]]


_RETURN_WHEN = ("FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED")


@public
def wait(
    futures: Iterable[Future[Any]],
    timeout: float | None = None,
    return_when: str = "ALL_COMPLETED",
    *,
    progress: bool = False,
) -> DoneAndNotDone:
    """``concurrent.futures.wait`` for any futures (task futures, ``submit``
    futures); ``return_when`` is ``"FIRST_COMPLETED"``, ``"FIRST_EXCEPTION"``
    or ``"ALL_COMPLETED"``. Inside a task on threads, tasks waited for that no
    worker has started run in the waiting thread (no deadlock). ``progress``: a
    tqdm bar over every task call behind ``futures`` (their inputs too): tasks
    settled, rate, failures so far."""
    fs = _check_futures(futures, "wait")
    validate.check_choice(return_when, "return_when", _RETURN_WHEN)
    validate.check_bool(progress, "progress")
    deadline = _deadline(timeout)
    _check_blocking(fs, timeout, "mc.wait()", any_one=return_when == "FIRST_COMPLETED")
    help_along(fs, deadline, first=return_when == "FIRST_COMPLETED")
    if progress:
        return _wait_showing(fs, deadline, return_when)
    done, not_done = _wait(fs, _left(deadline), return_when)
    return DoneAndNotDone(done, not_done)


def _wait_showing(fs: list[Future[Any]], deadline: float | None, when: str) -> DoneAndNotDone:
    """``wait`` with a bar, refreshed every ``_BAR_TICK`` seconds while it waits."""
    from manycore._tasks._graph import nodes_behind
    from manycore._tasks._progress import GraphProgress

    bar = GraphProgress(nodes_behind(fs), [f for f in fs if not isinstance(f, TaskFuture)])
    try:
        while True:
            left = _left(deadline)
            tick = _BAR_TICK if left is None else min(left, _BAR_TICK)
            done, not_done = _wait(fs, tick, when)
            bar.refresh()
            if _satisfied(done, not_done, when) or (left is not None and left <= tick):
                return DoneAndNotDone(done, not_done)
    finally:
        bar.close()


def _satisfied(done: set[Future[Any]], not_done: set[Future[Any]], when: str) -> bool:
    if not not_done:
        return True
    if when == "FIRST_COMPLETED":
        return bool(done)
    if when == "FIRST_EXCEPTION":
        return any(not f.cancelled() and f.exception() is not None for f in done)
    return False


@public
def as_completed(
    futures: Iterable[Future[Any]], timeout: float | None = None
) -> Iterator[Future[Any]]:
    """``concurrent.futures.as_completed`` for any futures: each as it finishes."""
    fs = _check_futures(futures, "as_completed")
    deadline = _deadline(timeout)
    _check_blocking(fs, timeout, "mc.as_completed()")
    return _completed(fs, deadline)


def _completed(fs: list[Future[Any]], deadline: float | None) -> Iterator[Future[Any]]:
    help_along(fs, deadline)  # (inside a task: run what no worker has started)
    yield from _as_completed(fs, _left(deadline))


_BAR_TICK = 0.1  # seconds between refreshes of a waiting graph's progress bar


def _check_futures(futures: Iterable[Future[Any]], name: str) -> list[Future[Any]]:
    if isinstance(futures, Future):
        raise TypeError(f"{name}() takes an iterable of futures, not a single future")
    try:
        fs = list(futures)
    except TypeError:
        raise TypeError(
            f"{name}() takes an iterable of futures, got {type(futures).__name__}"
        ) from None
    for f in fs:
        if not isinstance(f, Future):
            raise TypeError(f"{name}() takes futures, got an item of type {type(f).__name__}")
    return fs


def _check_blocking(
    fs: list[Future[Any]], timeout: object, what: str, any_one: bool = False
) -> None:
    """Refuse a wait that blocks this thread for futures only it can settle (an
    asyncio pool's calls submitted from the event loop running here): it would
    end only at its timeout, or never. A poll (``timeout=0``) blocks nothing;
    ``any_one``: the wait ends with the first future done, so it is refused
    only if no future can be done meanwhile."""
    if timeout == 0:
        return
    refusals: list[RuntimeError] = []
    for f in fs:
        try:
            if isinstance(f, AwaitableFuture):
                f.check_blocking_wait(what)
            if any_one:
                return  # this one can be done meanwhile (or is)
        except RuntimeError as exc:
            refusals.append(exc)
            if not any_one:
                raise
    if refusals:
        raise refusals[0]


def _deadline(timeout: object) -> float | None:
    """``time.monotonic()`` at which a wait of ``timeout`` seconds ends (None: never)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise bad_wait_timeout(timeout)
    return None if timeout == math.inf else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
