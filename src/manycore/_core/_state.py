"""Worker state: what a pool's ``init`` returned, and the pool's ``shared`` object,
as seen from inside a task.

A process worker has one of each; a thread of the threads backend has its own
state (``init`` runs in each thread) and shares the pool's ``shared`` object. A
coroutine of an asyncio pool that runs on its caller's event loop (not the
pool's) carries the pool's view in its context instead.
"""

from __future__ import annotations

import contextvars
import threading

from manycore._core._public import public

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["shared", "worker_state"]

_UNSET: object = object()
_local = threading.local()
_process: dict[str, object] = {}  # set once in a worker process
_task: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "manycore_task_view", default=None
)


def set_process(state: object = _UNSET, shared_obj: object = _UNSET) -> None:
    if state is not _UNSET:
        _process["state"] = state
    if shared_obj is not _UNSET:
        _process["shared"] = shared_obj


def set_thread(state: object, shared_obj: object) -> tuple[object, object]:
    """Install a thread's view (threads and serial backends); the previous one."""
    previous = (getattr(_local, "state", _UNSET), getattr(_local, "shared", _UNSET))
    _local.state = state
    _local.shared = shared_obj
    return previous


def set_task(state: object, shared_obj: object) -> None:
    """Install the view of the running asyncio task (and what it starts)."""
    _task.set({"state": state, "shared": shared_obj})


def context() -> str | None:
    """Where this code runs: ``"process"`` in a process worker, ``"thread"`` in
    a task of the threads or serial backend, None elsewhere."""
    if getattr(_local, "shared", _UNSET) is not _UNSET:
        return "thread"
    return "process" if "shared" in _process else None


def _lookup(key: str, what: str) -> object:
    view = _task.get()
    value = view[key] if view is not None else getattr(_local, key, _UNSET)
    if value is _UNSET:
        value = _process.get(key, _UNSET)
    if value is _UNSET:
        raise LookupError(
            f"mc.{what}() is for a task running on a manycore pool; called elsewhere "
            "there is no pool to ask"
        )
    return value


@public
def worker_state() -> Any:  # the user's own value
    """Inside a task: what the pool's ``init`` returned in this worker (``None``
    without an ``init``). A loaded model, a database connection: made once per
    worker, used by every task there, never pickled per task."""
    return _lookup("state", "worker_state")


@public
def shared() -> Any:  # the user's own value
    """Inside a task: the object given as ``Pool(shared=...)``. It reaches each
    worker once (large NumPy arrays in it through shared memory, read-only),
    whatever the number of tasks."""
    return _lookup("shared", "shared")
