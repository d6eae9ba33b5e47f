"""``manycore.multiprocessing.Pool``: the interface and the semantics of
``multiprocessing.Pool``, run on manycore's engine.

Every call goes through the scheduler's door (``Pool.scheduler``: one ``submit``
per task or per chunk, as the standard pool sends one task per chunk), so the
engine's guarantees hold: a worker that dies fails the result that ran on it with
:class:`~manycore.WorkerCrashed` (the standard pool waits for it forever),
functions and arguments are pickled with cloudpickle where plain pickle cannot
(lambdas and closures under spawn), and a ``join`` after ``close`` never hangs.

As in the standard pool, one thread reads ``imap``'s input and sends its chunks
(the task thread) and one delivers outcomes and runs callbacks (the result
thread). Neither holds the pool, so a pool that is dropped is collected.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.pool
import queue
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError, Future
from typing import Any

from manycore._api._mp_chunks import run_chunk
from manycore._api._mp_results import (
    ApplyResult,
    Callback,
    IMapIterator,
    IMapUnorderedIterator,
    Jobs,
    MapResult,
    chunk_values,
)
from manycore._api._pool import Pool as EnginePool
from manycore._core import SerializationError, set_cause
from manycore.backends import backend_for

__all__ = ["Pool"]

# multiprocessing.pool's own state values (code that compares pool._state uses them).
RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

# (result, part index, succeeded, value or exception); None ends the thread.
Outcome = tuple[Any, int, bool, Any] | None
Feed = Callable[[], None] | None


class Pool:
    """A drop-in for ``multiprocessing.Pool`` (see ``docs/migrate.md``).

    ``processes``: workers (default: the CPUs this process may use).
    ``initializer(*initargs)`` runs in each worker as it starts.
    ``maxtasksperchild``: a worker is replaced after that many tasks (a chunk of a
    map counts as one task, as in the standard pool). ``context``: a
    ``multiprocessing`` context whose start method the workers use; by default
    the one ``multiprocessing.set_start_method`` set, else manycore's ("spawn").
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
    ):
        self._state = TERMINATE  # until the workers exist (read by __del__)
        _check_processes(processes)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        _check_maxtasks(maxtasksperchild)
        self._engine = EnginePool(
            processes,
            backend=backend_for("process"),
            start_method=_start_method(context),
            init=initializer,
            init_args=initargs,
            max_tasks_per_worker=maxtasksperchild,
        )
        self._processes = self._engine.workers
        self._policy = self._engine.call_options(retries=0)  # no retries, no timeout
        self._jobs = Jobs()
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._feeds: queue.SimpleQueue[Feed] = queue.SimpleQueue()
        self._result_thread = _start(_deliver_outcomes, self._outcomes, "result")
        self._task_thread = _start(_run_feeds, self._feeds, "task")
        weakref.finalize(self, _end_threads, self._feeds, self._outcomes)
        self._state = RUN

    def __repr__(self) -> str:
        return (
            f"<{type(self).__module__}.{type(self).__qualname__} "
            f"state={self._state} pool_size={self._processes}>"
        )

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __del__(self) -> None:
        if getattr(self, "_state", None) == RUN:
            warnings.warn(
                f"unclosed running multiprocessing pool {self!r}",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    @property
    def scheduler(self) -> Any:
        """The scheduler of the manycore pool underneath (the door tasks use)."""
        return self._engine.scheduler

    # ------------------------------------------------------------------ one call

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: Any = None) -> Any:
        """``func(*args, **kwds)`` on a worker; waits for the value."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> ApplyResult:
        """``func(*args, **kwds)`` on a worker; an :class:`AsyncResult` at once."""
        self._check_running()
        _check_callable(func, "func")
        args = _check_args(args)
        kwds = _check_kwds(kwds)
        result = ApplyResult(self._jobs, callback, error_callback)
        self._send(result, 0, func, args, kwds)
        return result

    # ------------------------------------------------------------------ maps

    def map(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: Any = None) -> Any:
        """``list(map(func, iterable))`` on the workers, in chunks of ``chunksize``."""
        return self._map_async(func, iterable, False, chunksize).get()

    def starmap(
        self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: Any = None
    ) -> Any:
        """``list(itertools.starmap(func, iterable))`` on the workers."""
        return self._map_async(func, iterable, True, chunksize).get()

    def map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: Any = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> MapResult:
        """``map`` without waiting: a result whose ``get()`` is the list."""
        return self._map_async(func, iterable, False, chunksize, callback, error_callback)

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: Any = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> MapResult:
        """``starmap`` without waiting."""
        return self._map_async(func, iterable, True, chunksize, callback, error_callback)

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> Any:
        """Values in input order as they come; the input is read by the task thread."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> Any:
        """Values as they finish."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        star: bool,
        chunksize: Any,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> MapResult:
        self._check_running()
        _check_callable(func, "func")
        if chunksize is not None:
            _check_chunksize(chunksize)
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        length = len(items)  # type: ignore[arg-type]
        if chunksize is None:
            chunksize, extra = divmod(length, self._processes * 4)
            chunksize += bool(extra)
        if length == 0:
            chunksize = 0
        result = MapResult(self._jobs, chunksize, length, callback, error_callback)
        if chunksize:
            try:
                chunks = list(_chunks(items, chunksize))
            except Exception as exc:  # the input itself failed (its __len__ lied, ...)
                result.expect(1)
                self._outcomes.put((result, 0, False, exc))
                return result
            for index, chunk in enumerate(chunks):
                self._send(result, index, run_chunk, (func, star, chunk), {})
        return result

    def _imap(
        self,
        kind: type[IMapIterator],
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int,
    ) -> Any:
        self._check_running()
        _check_callable(func, "func")
        _check_chunksize(chunksize)
        iter(iterable)  # a TypeError now, as the standard, for what is not iterable
        result = kind(self._jobs)
        self._feeds.put(functools.partial(self._feed, result, func, iterable, chunksize))
        return result if chunksize == 1 else chunk_values(result)

    def _feed(
        self, result: IMapIterator, func: Callable[..., Any], iterable: Iterable[Any], size: int
    ) -> None:
        """On the task thread: read the input and send its parts. An error reading it
        is a part of its own, after those sent (where the standard pool puts it)."""
        index = -1
        try:
            if size == 1:
                for index, item in enumerate(iterable):
                    self._send(result, index, func, (item,), {})
            else:
                for index, chunk in enumerate(_chunks(iterable, size)):
                    self._send(result, index, run_chunk, (func, False, chunk), {})
        except Exception as exc:
            index += 1
            self._outcomes.put((result, index, False, exc))
        result.set_length(index + 1)

    def _send(
        self,
        result: Any,
        index: int,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwds: dict[str, Any],
    ) -> None:
        """One task to the scheduler; its outcome to the result thread."""
        try:
            future = self._engine.scheduler.submit(func, args, kwds, self._policy)
        except Exception as exc:  # an argument that will not pickle, a pool closed
            self._outcomes.put((result, index, False, _standard_error(exc)))
            return
        future.add_done_callback(functools.partial(_report, self._outcomes, result, index))

    # ------------------------------------------------------------------ lifecycle

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def close(self) -> None:
        """No more tasks; the workers end once what was sent is done."""
        if self._state == RUN:
            self._state = CLOSE
            self._feeds.put(None)

    def terminate(self) -> None:
        """Stop the workers now. Results not complete fail with ``CancelledError``
        (the standard pool leaves them waiting for ever)."""
        self._state = TERMINATE
        self._feeds.put(None)
        self._engine.terminate()

    def join(self) -> None:
        """Wait for the workers to end, after ``close`` or ``terminate``."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state == CLOSE:
            self._task_thread.join()
            self._jobs.wait_empty()
            self._engine.shutdown(wait=True)
        else:
            self._engine.shutdown(wait=True, cancel_pending=True)
        self._outcomes.put(None)
        self._result_thread.join()
        for result in self._jobs.pending():
            result.fail(CancelledError("the pool was terminated"))

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()


def _check_processes(processes: Any) -> None:
    if processes is None:
        return
    if isinstance(processes, bool) or not isinstance(processes, int):
        raise TypeError(f"processes must be a whole number or None, got {processes!r:.80}")
    if processes < 1:
        raise ValueError("Number of processes must be at least 1")


def _check_maxtasks(value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError("maxtasksperchild must be a positive int or None")


def _check_chunksize(chunksize: Any) -> None:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be a whole number, got {chunksize!r:.80}")
    if chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")


def _check_callable(func: Any, name: str) -> None:
    if not callable(func):
        raise TypeError(f"{name} must be callable, got {func!r:.80}")


def _check_args(args: Any) -> tuple[Any, ...]:
    try:
        return tuple(args)
    except TypeError:
        raise TypeError(f"args must be an iterable of arguments, got {args!r:.80}") from None


def _check_kwds(kwds: Any) -> dict[str, Any]:
    if kwds is None:
        return {}
    if not isinstance(kwds, Mapping):
        raise TypeError(f"kwds must be a mapping of keyword arguments, got {kwds!r:.80}")
    return dict(kwds)


def _start_method(context: Any) -> str | None:
    """The context's start method, else the one set for ``multiprocessing``, else
    None (manycore's default)."""
    if context is not None:
        return str(context.get_start_method())
    return multiprocessing.get_start_method(allow_none=True)


def _chunks(items: Iterable[Any], size: int) -> Iterator[tuple[Any, ...]]:
    it = iter(items)
    while chunk := tuple(_take(it, size)):
        yield chunk


def _take(it: Iterator[Any], size: int) -> Iterator[Any]:
    for _, item in zip(range(size), it, strict=False):
        yield item


def _standard_error(exc: BaseException) -> BaseException:
    """The error the standard pool would give: the pickling error itself, not
    manycore's :class:`SerializationError` around it, and the worker's traceback
    as a ``multiprocessing.pool.RemoteTraceback`` cause."""
    cause = exc.__cause__
    if isinstance(exc, SerializationError) and isinstance(cause, Exception):
        return cause
    text = getattr(cause, "tb_text", None)
    if isinstance(text, str) and type(cause).__name__ == "RemoteTraceback":
        remote = multiprocessing.pool.RemoteTraceback  # type: ignore[attr-defined]
        set_cause(exc, remote(f'\n"""\n{text}"""'))
    return exc


def _report(
    outcomes: queue.SimpleQueue[Outcome], result: Any, index: int, future: Future[Any]
) -> None:
    """A future's outcome, to the result thread (from the thread that settled it)."""
    if future.cancelled():
        outcomes.put((result, index, False, CancelledError()))
        return
    exc = future.exception()
    if exc is None:
        outcomes.put((result, index, True, future.result()))
    else:
        outcomes.put((result, index, False, _standard_error(exc)))


def _deliver_outcomes(outcomes: queue.SimpleQueue[Outcome]) -> None:
    while (outcome := outcomes.get()) is not None:
        result, index, ok, value = outcome
        result.settle(index, ok, value)
        # Not held while the thread waits for the next: the values belong to the user.
        outcome = result = value = None


def _run_feeds(feeds: queue.SimpleQueue[Feed]) -> None:
    while (feed := feeds.get()) is not None:
        feed()
        feed = None  # nor the input and the function of the last imap


def _start(target: Callable[[Any], None], channel: object, role: str) -> threading.Thread:
    thread = threading.Thread(
        target=target, args=(channel,), name=f"manycore-mp-{role}", daemon=True
    )
    thread.start()
    return thread


def _end_threads(feeds: queue.SimpleQueue[Feed], outcomes: queue.SimpleQueue[Outcome]) -> None:
    """The pool was dropped: its two threads end."""
    feeds.put(None)
    outcomes.put(None)


Pool.__module__ = "manycore.multiprocessing"
