"""What a worker is given as it starts: the pool's ``init``, ``init_args`` and ``exit``.

The standard library's queues, locks, events, shared values and pipe ends may
reach another process only as it is created ("should only be shared between
processes through inheritance"): ``multiprocessing`` pickles a child's Process
arguments inside a *spawning context*, where these objects allow it and hand over
their file descriptors with the child. So does manycore for each worker, which
makes ``Pool(init=setup_logging, init_args=(log_queue,))`` work as with
``ProcessPoolExecutor(initializer=..., initargs=...)``:

* ``spawn`` and ``forkserver``: ``init`` and its arguments are pickled once,
  inside multiprocessing's spawning context with a stand-in for its Popen that
  collects the descriptors to pass; every worker (and replacement) gets copies
  of them that the pool keeps, as it starts, and rebuilds the objects on them
  (:class:`InheritedFd`). Locks and semaphores travel by name.
* ``fork``: nothing is pickled; the worker is a copy of this process and finds
  the objects themselves in its memory, as a forked ``multiprocessing`` child
  does. That is also the only way to share an object made in multiprocessing's
  ``fork`` context (the default one on Linux before Python 3.14): its semaphores
  have no name another process could open.
"""

from __future__ import annotations

import io
import os
import sys
import weakref

from manycore._core import SerializationError

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

    # A pool's (init, init_args, exit), as a worker runs them.
    Setup: TypeAlias = tuple[
        Callable[..., object] | None, tuple[object, ...], Callable[[], object] | None
    ]

__all__ = ["MAX_FDS", "Inheritance", "InheritedFd", "dumps_init", "receive", "take_authkey"]

MAX_FDS = 32  # descriptors a worker may be handed (a queue takes two)

# In a worker: the descriptors it was handed as it started, in order.
_received: tuple[int, ...] = ()


def receive(fds: tuple[int, ...]) -> None:
    """In a worker, before its ``init`` is unpickled: the descriptors it got."""
    global _received
    _received = fds


class InheritedFd:
    """A descriptor a worker got as it started, by its place in the list: what
    multiprocessing's ``DupFd`` stands for in a child it spawns."""

    def __init__(self, index: int):
        self.index = index

    def detach(self) -> int:
        return _received[self.index]


class _Spawning:
    """Stands in for multiprocessing's Popen of a child being started while
    ``init`` is pickled: objects that hold a descriptor give it here."""

    DupFd = InheritedFd

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        if fd not in self.fds:
            self.fds.append(fd)
        return self.fds.index(fd)


class Inheritance:
    """``init``, ``init_args`` and ``exit`` as every worker of a pool gets them:
    ``blob`` (pickled) and the descriptors ``fds`` to hand over with it, or the
    objects themselves (``fork``)."""

    def __init__(self, blob: bytes | None, fds: tuple[int, ...], objects: Setup | None = None):
        self.blob = blob
        self.fds = fds
        self.objects = objects


def dumps_init(
    setup: Setup,
    start_method: str,
) -> Inheritance:
    """``(init, init_args, exit)`` made ready for the workers of ``start_method``."""
    if start_method == "fork":
        return Inheritance(None, (), setup)
    from multiprocessing import context

    # (Here, not at the top: workers import this module, and this pickler loads
    # cloudpickle; only the parent pickles a pool's init.)
    from manycore._transport import dumps_code_with

    spawning: Any = _Spawning()  # what multiprocessing takes for a Popen
    context.set_spawning_popen(spawning)
    try:
        blob = dumps_code_with(setup, _reducers())
    except Exception as exc:
        raise _not_inheritable(exc, start_method) from exc
    finally:
        context.set_spawning_popen(None)
    if len(spawning.fds) > MAX_FDS:
        raise SerializationError(
            f"init_args hold {len(spawning.fds)} file descriptors (pipes, queues); at most "
            f"{MAX_FDS} can be handed to each worker"
        )
    # The pool's own copies: a replacement started after the user closed the
    # object must not be handed whatever file reused the number meanwhile.
    fds = tuple(os.dup(fd) for fd in spawning.fds)
    inheritance = Inheritance(blob, fds)
    weakref.finalize(inheritance, _close_all, fds)
    return inheritance


def _close_all(fds: tuple[int, ...]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _reducers() -> dict[type, object]:
    """multiprocessing's reducers of its own objects (a pipe end, as a queue holds
    two; a shared Value or Array and its memory), which hand a descriptor to the
    child being started. Not what other libraries registered with it (PyTorch's
    tensors would move to shared memory), nor its reducers of methods and
    partials: those pickle as they always did."""
    if "multiprocessing.reduction" not in sys.modules:
        return {}  # then there is no such object to pickle
    from multiprocessing.reduction import ForkingPickler

    table = ForkingPickler(io.BytesIO()).dispatch_table
    return {t: r for t, r in table.items() if _own(getattr(r, "__module__", None) or "")}


def _own(module: str) -> bool:
    # Connection, Arena, ctypes in shared memory: their reducers' modules. Methods,
    # partials and sockets are multiprocessing.reduction's.
    return module.startswith("multiprocessing.") and module != "multiprocessing.reduction"


def _not_inheritable(exc: Exception, start_method: str) -> SerializationError:
    if "fork context" in str(exc):  # a semaphore with no name: only fork can share it
        return SerializationError(
            f"init_args hold a multiprocessing object made in the 'fork' context (the "
            f"default one on Linux before Python 3.14), which only start_method='fork' "
            f"workers can inherit, not "
            f"{start_method!r} ones: make it with multiprocessing.get_context('spawn') "
            f"(e.g. get_context('spawn').Queue()), use start_method='fork', or use "
            f"mc.Queue()/mc.Lock() ({exc})"
        )
    return SerializationError(
        f"cannot pickle init, init_args or exit to send them to the worker processes: "
        f"{exc!r}. Pass something picklable, or create the object inside init"
    )


def adopt_after_fork() -> None:
    """In a worker forked from the user's process (``fork``): what multiprocessing
    does in a child it forks. Objects inherited from the parent then work here (a
    queue the parent used starts a feeder thread of its own), and the parent's
    finalizers and children are not this worker's: its exit must not join them,
    nor shut down the parent's Manager."""
    if "multiprocessing.process" not in sys.modules:
        return  # nothing of multiprocessing's to adopt
    from multiprocessing import process

    getattr(process, "_children", set()).clear()
    after_fork = getattr(process.BaseProcess, "_after_fork", None)
    if after_fork is not None:
        after_fork()


def take_authkey(authkey: bytes) -> None:
    """In a worker: use the parent's multiprocessing key, before anything is unpickled: a
    Manager proxy among the arguments connects to its manager as it is rebuilt.
    A worker that has not loaded multiprocessing (spawn, the fork server) gets
    the key into it as it loads: importing it costs ~4 ms a worker, and most
    tasks never use it."""
    process = sys.modules.get("multiprocessing.process")
    if process is not None:
        process.current_process().authkey = authkey
    else:
        sys.meta_path.insert(0, _KeyOnLoad(authkey))


class _KeyOnLoad:
    """An import finder that waits for ``multiprocessing.process`` to be imported,
    then sets the parent's key in it as soon as it has run (before whatever
    imported it can use the key), and leaves ``sys.meta_path``."""

    def __init__(self, authkey: bytes):
        self._authkey = authkey

    def find_spec(self, name: str, path: Sequence[str] | None, target: object = None) -> Any:
        if name != "multiprocessing.process":
            return None
        sys.meta_path.remove(self)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # (not a file: left to load as it would have)
        run = loader.exec_module  # (each spec gets a loader of its own)

        def exec_module(module: Any) -> None:
            run(module)
            module.current_process().authkey = self._authkey

        loader.exec_module = exec_module
        return spec
