"""manycore's exceptions.

Every error that manycore raises on its own account derives from one base::

    ManycoreError
    ├── PoolClosed            the pool was shut down; no new work is accepted
    ├── PoolBroken            a worker's ``init`` raised; the pool runs nothing more
    │                         (also a concurrent.futures.BrokenExecutor; in _broken)
    ├── WorkerCrashed         a worker process died while running an item (also a
    │                         concurrent.futures.process.BrokenProcessPool; in _broken)
    ├── TaskTimeout           an item ran longer than ``timeout`` (also a TimeoutError)
    ├── SerializationError    an argument, a function or a result could not be pickled
    ├── UpstreamFailed        a task was not run because a task it needs failed
    ├── RemoteError           a task's exception that could not travel back as itself
    └── CheckpointMismatch    a checkpoint file was written by another function or input
                              (also a ValueError)

An exception raised by the user's function reaches the caller as *that* exception
(same type), with the worker's traceback text attached as ``__cause__`` through a
:class:`RemoteTraceback`, the way ``concurrent.futures`` does it, and a note naming
the index of the input that raised it.
"""

from __future__ import annotations

import signal
import sys
from types import GetSetDescriptorType, TracebackType

from manycore._core._public import public

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from typing import TypeGuard

    from manycore._core._broken import PoolBroken, WorkerCrashed

__all__ = [
    "CheckpointMismatch",
    "ManycoreError",
    "PoolClosed",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "TaskTimeout",
    "UpstreamFailed",
    "add_note",
    "bad_wait_timeout",
    "closed_at_exit",
    "describe_exit",
    "is_pool_broken",
    "is_worker_crash",
    "pool_closed",
    "pool_of_another_process",
    "set_cause",
    "set_traceback",
    "timed_out",
]


@public
class ManycoreError(Exception):
    """Base class of every error raised by manycore itself."""


@public
class PoolClosed(ManycoreError, RuntimeError):
    """Work was given to a pool that has been shut down."""


# PoolBroken and WorkerCrashed (and init_raised) live in _broken: their standard
# library bases cost a worker ~10 ms of imports it never needs. They stay
# reachable here by name, for code and for pickles that name this module.
def __getattr__(name: str) -> object:
    if name in _BROKEN:
        from manycore._core import _broken

        return getattr(_broken, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_BROKEN = frozenset({"PoolBroken", "WorkerCrashed", "init_raised"})


# isinstance() checks that do not load _broken (its imports cost the parent ~4 ms
# more): no instance of its classes can exist before it is loaded.
def is_pool_broken(exc: object) -> TypeGuard[PoolBroken]:
    """``isinstance(exc, PoolBroken)``."""
    broken = sys.modules.get("manycore._core._broken")
    return broken is not None and isinstance(exc, broken.PoolBroken)


def is_worker_crash(exc: object) -> TypeGuard[WorkerCrashed]:
    """``isinstance(exc, WorkerCrashed)``."""
    broken = sys.modules.get("manycore._core._broken")
    return broken is not None and isinstance(exc, broken.WorkerCrashed)


def _rebuild_crash(message: str, exitcode: int | None, index: int | None) -> ManycoreError:
    """Unpickles a WorkerCrashed (named here since before the classes moved)."""
    from manycore._core._broken import WorkerCrashed

    return WorkerCrashed(message, exitcode=exitcode, index=index)


@public
class TaskTimeout(ManycoreError, TimeoutError):
    """An item ran longer than its ``timeout``.

    On the processes backend its worker was killed (the item really stopped) and
    replaced. Threads cannot be killed: the call goes on in the background and its
    result is dropped. ``index`` is the input index, ``timeout`` the limit in seconds.
    """

    def __init__(self, message: str, *, timeout: float | None = None, index: int | None = None):
        super().__init__(message)
        self.timeout = timeout
        self.index = index

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_timeout, (str(self), self.timeout, self.index))


def _rebuild_timeout(message: str, timeout: float | None, index: int | None) -> TaskTimeout:
    return TaskTimeout(message, timeout=timeout, index=index)


@public
class UpstreamFailed(ManycoreError):
    """A task was not run because one of its input tasks failed.

    ``task`` names the input that failed and ``key`` is its number in the graph;
    the input's own exception is this one's ``__cause__`` (itself an
    ``UpstreamFailed`` further down a chain, so the traceback shows the path);
    ``first`` is the error that started the chain.
    """

    def __init__(self, message: str, *, task: str | None = None, key: int | None = None):
        super().__init__(message)
        self.task = task
        self.key = key
        self.first: BaseException | None = None  # the error that started the chain

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_upstream, (str(self), self.task, self.key))


def _rebuild_upstream(message: str, task: str | None, key: int | None) -> UpstreamFailed:
    return UpstreamFailed(message, task=task, key=key)


@public
class SerializationError(ManycoreError, TypeError):
    """Something that had to cross a process boundary could not be pickled.

    The message names what it was (argument, item, function or result) and its type.
    """


@public
class RemoteError(ManycoreError):
    """A task raised an exception that could not be sent back as itself.

    ``type_name`` holds the qualified name of the original type; the message and the
    remote traceback text are kept.
    """

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name

    def __reduce__(self) -> tuple[object, ...]:
        return (RemoteError, (self.type_name, str(self).partition(": ")[2]))


@public
class CheckpointMismatch(ManycoreError, ValueError):
    """A ``checkpoint=`` file holds results of another function or another input.

    The message names the file, what changed (the function, or the first input
    item that differs) and how to go on: ``resume="force"`` keeps the stored
    results, ``resume=False`` (or deleting the file) starts over. ``path`` is the
    file.
    """

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_mismatch, (str(self), self.path))


def _rebuild_mismatch(message: str, path: str | None) -> CheckpointMismatch:
    return CheckpointMismatch(message, path=path)


@public
class RemoteTraceback(Exception):
    """Carries the worker-side traceback text; set as the ``__cause__`` of a task's error."""

    def __init__(self, tb_text: str):
        super().__init__(tb_text)
        self.tb_text = tb_text

    def __str__(self) -> str:
        return f'\n"""\n{self.tb_text}"""'


# The C-level slots of every exception: setting through them never runs a
# class's own __setattr__ (a frozen dataclass exception refuses every attribute,
# and the interpreter itself sets these slots the same way on ``raise ... from``).
_CAUSE_SLOT: GetSetDescriptorType = BaseException.__dict__["__cause__"]


def set_cause(exc: BaseException, cause: BaseException | None) -> bool:
    """``exc.__cause__ = cause`` that never raises; False if it did not take."""
    try:
        _CAUSE_SLOT.__set__(exc, cause)
    except Exception:
        return False
    return True


def set_traceback(exc: BaseException, tb: TracebackType | None) -> None:
    """``exc.__traceback__ = tb`` that never raises (``with_traceback`` is the C
    slot's setter: no ``__setattr__`` of the class runs)."""
    try:
        exc.with_traceback(tb)
    except Exception:
        pass


def add_note(exc: BaseException, note: str) -> None:
    """Attach ``note`` to ``exc`` (``add_note`` on 3.11+, ``__notes__`` before).

    Never raises: an exception whose class refuses new attributes gets its
    ``__notes__`` list set past its ``__setattr__``; if even that fails, the note
    is dropped (the item's index is still on its ``Failure``)."""
    try:
        if sys.version_info >= (3, 11):
            exc.add_note(note)
            return
    except Exception:
        pass
    try:
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            object.__setattr__(exc, "__notes__", notes)
        notes.append(note)
    except Exception:
        pass


def describe_exit(exitcode: int | None) -> str:
    """Turn a process exit status into words: ``exit code 3`` or ``signal SIGKILL``."""
    if exitcode is None:
        return "unknown exit status"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


# The texts of errors that several backends raise, each worded here once.


def pool_closed() -> PoolClosed:
    """Work given to a pool after ``shutdown``."""
    return PoolClosed("the pool has been shut down and accepts no new work")


def closed_at_exit() -> PoolClosed:
    """Work given to an Executor once the interpreter began to exit (in the
    standard library's words: code written for it may match on the text)."""
    return PoolClosed("cannot schedule new futures after interpreter shutdown")


def bad_wait_timeout(timeout: object) -> ValueError:
    """A ``timeout=`` of a wait (a lock, a queue, a future) that is no duration."""
    return ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")


def timed_out(
    what: str, timeout: float, index: int, then: str, *, took: float | None = None
) -> TaskTimeout:
    """Item ``what`` (input ``index``) overstayed ``timeout``; ``then`` says what
    became of it (killed, cancelled, left to run on)."""
    limit = f"timeout={timeout:g} s"
    ran = (
        f"took {took:.3g} s, longer than {limit}"
        if took is not None
        else f"ran longer than {limit}"
    )
    return TaskTimeout(f"{what} {ran}; {then}", timeout=timeout, index=index)


def pool_of_another_process(owner: int) -> PoolClosed:
    """A pool used in a child made by ``os.fork()``: its workers are the parent's."""
    import os

    return PoolClosed(
        f"this pool belongs to process {owner}; this is process {os.getpid()}, a child "
        "made by os.fork(), where the pool's workers and threads do not exist (waiting "
        "for them would hang). Create a new Pool in the child (mc.map and the other "
        "top-level functions start fresh default pools there by themselves)"
    )
