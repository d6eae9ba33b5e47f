"""Starting worker processes: the ``spawn``, ``fork`` and ``forkserver`` start methods.

``spawn`` starts a fresh interpreter with :mod:`subprocess`, handing it only its own
pipe ends. Unlike :mod:`multiprocessing` it never re-imports the user's main script in
the child, so a script without an ``if __name__ == "__main__"`` guard works, and
functions from ``__main__`` travel by value (cloudpickle). ``forkserver`` (see
:mod:`manycore._engine._forkserver`) forks workers from a small single-threaded server
that was started that way: the same clean worker, in milliseconds instead of a
fresh interpreter's tens of milliseconds. It is the default on Linux; each worker
gets the parent's environment, working directory and ``sys.path`` as they are when
it starts, as a spawned one would. ``fork`` is fastest but unsafe when the parent
runs other threads, so it is used only when asked for.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

from manycore._core import BLAS_ENV  # the variables a worker is started with

if TYPE_CHECKING:
    from manycore._engine._inherit import Inheritance, Setup

__all__ = [
    "BLAS_ENV",
    "START_METHODS",
    "Context",
    "WorkerProcess",
    "default_start_method",
    "launch",
    "parent_context",
]

START_METHODS: tuple[str, ...] = ("spawn",)
if hasattr(os, "fork"):
    START_METHODS += ("fork",)
    if hasattr(__import__("socket"), "send_fds"):
        START_METHODS += ("forkserver",)

# Every pipe end the engines own in this process. Any forked child closes them
# (our own fork-started workers keep their two): a child of some other library's
# fork-based pool holding a copy would keep a worker from ever seeing end of file
# on its task pipe, and the parent from seeing a dead worker's end of file.
ENGINE_FDS: set[int] = set()
_KEEP_IN_CHILD: set[int] = set()


def _close_engine_fds_in_child() -> None:
    for fd in list(ENGINE_FDS):
        if fd not in _KEEP_IN_CHILD:
            try:
                os.close(fd)
            except OSError:
                pass
    ENGINE_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_engine_fds_in_child)


def default_start_method() -> str:
    # Not on macOS: CPython itself moved to spawn there because system frameworks
    # break in forked children, and no Mac was at hand to show our server is safe.
    if "forkserver" in START_METHODS and sys.platform.startswith("linux"):
        return "forkserver"
    return "spawn"


class Context(NamedTuple):
    """What a new worker inherits from this process, whichever launcher starts it."""

    environ: dict[str, str]
    cwd: str | None  # None: the directory was removed; the worker keeps its launcher's
    path: list[str]


def parent_context(env: Mapping[str, str] | None = None) -> Context:
    """This process's environment (plus ``env``), working directory and
    ``sys.path``, as they are now."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    path = [p for p in sys.path if isinstance(p, str)]
    return Context({**os.environ, **(env or {})}, cwd, path)


class WorkerProcess(Protocol):
    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float) -> int | None: ...
    def kill(self) -> None: ...


class _Spawned:
    def __init__(self, popen: subprocess.Popen[bytes]):
        self._popen = popen
        self.pid = popen.pid

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self._popen.poll() is None:
            try:
                self._popen.kill()
            except ProcessLookupError:
                pass


class _Forked:
    def __init__(self, pid: int):
        self.pid = pid
        self._status: int | None = None

    def poll(self) -> int | None:
        if self._status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self._status = -1
                return self._status
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        pidfd = _pidfd(self.pid)
        try:
            while self.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if pidfd is not None:
                    select.select([pidfd], [], [], left)
                else:  # no pidfd (old kernel, not Linux): short sleeps, crash path only
                    time.sleep(min(left, 0.005))
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return self._status

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def launch(
    method: str,
    task_fd: int,
    result_fd: int,
    slot_fd: int,
    blas_threads: int | None = None,
    setup: Inheritance | None = None,
    env: Mapping[str, str] | None = None,
) -> WorkerProcess:
    """Start a worker that reads tasks from ``task_fd`` and writes results to
    ``result_fd``; ``slot_fd`` is its progress slot (shared memory). With
    ``blas_threads``, BLAS/OpenMP libraries it loads use that many threads.
    ``setup``: what the worker inherits as it starts (see :mod:`_inherit`): the
    objects themselves (fork), or the descriptors its pickled ``init`` needs.
    ``env``: variables set in the worker before it imports anything of the
    user's (a GPU runtime reads its device list once, as it loads)."""
    if method == "fork":
        objects = None if setup is None else setup.objects
        return _fork(task_fd, result_fd, slot_fd, objects, dict(env or {}))
    fds = () if setup is None else setup.fds
    full = {} if blas_threads is None else dict.fromkeys(BLAS_ENV, str(blas_threads))
    full.update(env or {})
    if method == "forkserver":
        from manycore._engine import _forkserver

        return _forkserver.launch(task_fd, result_fd, slot_fd, full, fds)
    popen = spawn_python(
        "from manycore._engine._worker import main;"
        "a=[*map(int,sys.argv[1:])];main(*a[:3],fds=(*a[3:],))",
        [str(fd) for fd in (task_fd, result_fd, slot_fd, *fds)],
        pass_fds=(task_fd, result_fd, slot_fd, *fds),
        env=full,
    )
    return _Spawned(popen)


def spawn_python(
    code: str, args: list[str], pass_fds: tuple[int, ...], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A fresh interpreter running ``code`` with this process's ``sys.path`` (never
    the user's main script), these descriptors, and ``env`` added."""
    context = parent_context(env)
    full = context.environ
    full["MANYCORE_SYS_PATH"] = json.dumps(context.path)
    boot = "import os,sys,json;sys.path[:0]=json.loads(os.environ.pop('MANYCORE_SYS_PATH'));"
    return subprocess.Popen(
        [sys.executable, "-c", boot + code, *args],
        pass_fds=pass_fds,
        env=full,
        stdin=subprocess.DEVNULL,
    )


def _fork(
    task_fd: int, result_fd: int, slot_fd: int, setup: Setup | None, env: dict[str, str]
) -> WorkerProcess:
    mine = (task_fd, result_fd, slot_fd)
    _KEEP_IN_CHILD.update(mine)
    with warnings.catch_warnings():
        # Python 3.12+ warns when forking a threaded parent. The user chose "fork"
        # knowing that; the warning must not become an error in the parent after
        # the child already exists (with -W error it would orphan the child).
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            pid = os.fork()  # the at-fork hook closes the other engine fds in the child
        finally:
            _KEEP_IN_CHILD.difference_update(mine)
    if pid == 0:  # pragma: no cover - runs in the child, reported by coverage there
        try:
            os.environ.update(env)
            from manycore._engine._inherit import adopt_after_fork
            from manycore._engine._worker import main

            adopt_after_fork()
            main(task_fd, result_fd, slot_fd, inherited=setup)
        finally:
            os._exit(1)
    return _Forked(pid)
