"""The ``forkserver`` start method: workers forked from a small, single-threaded
server process.

``fork`` is fast but copies a parent that may run threads (unsafe); ``spawn`` is
safe but starts a fresh interpreter each time. The fork server is started once,
with ``spawn``'s launcher (it never runs the user's script), imports the worker
code, and then forks each worker from itself: a clean, single-threaded parent, so
workers start in milliseconds and safely.

Protocol on one Unix socket pair (the server holds one end, this process the
other). This process sends a request per worker: a header with the length of what
the worker inherits from it, the worker's three descriptors (and those its init
needs) attached (``socket.send_fds``), then that context itself (environment,
working directory, ``sys.path``: JSON). The server was started with this
process's state of that moment; sending it per worker makes a served worker see
what a spawned one would. The server answers ``(STARTED, pid)``. It also reaps
its children and sends ``(EXITED, pid, status)`` for each, since only a process's
parent can learn its exit status. The server exits when this process goes (end of
file on the socket).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

from manycore._engine._inherit import MAX_FDS
from manycore._transport import shmem

TYPE_CHECKING = False  # (not typing's: the server imports this; see test_startup_imports)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["available", "launch"]

_MESSAGE = struct.Struct("<iii")  # kind, pid, exit status
_STARTED = 1
_EXITED = 2
_REQUEST = struct.Struct("<i")  # bytes of the new worker's context (JSON) that follow
_KEEP_STATUSES = 10_000  # exit statuses remembered (a worker's is asked for soon)
_QUIET_TURN = 0.5  # the server's loop wakes at least this often (a lost wakeup costs no more)


def available() -> bool:
    return hasattr(os, "fork") and hasattr(socket, "send_fds")


class _Server:
    """This process's connection to its fork server."""

    def __init__(self) -> None:
        from manycore._engine import _launch

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = ours
        _launch.ENGINE_FDS.add(ours.fileno())
        try:
            self._proc = _launch.spawn_python(
                "from manycore._engine._forkserver import serve; serve(int(sys.argv[1]))",
                [str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._lock = threading.Lock()
        self._exited: dict[int, int] = {}
        self._buffer = b""
        self.gone = False  # the server died: exit statuses can no longer be known

    @property
    def pid(self) -> int:
        return self._proc.pid

    def fileno(self) -> int:
        return self._sock.fileno()

    def start(self, fds: tuple[int, ...], env: dict[str, str]) -> int:
        """A new worker with these descriptors and ``env`` added; its pid."""
        from manycore._engine._launch import parent_context

        context = json.dumps(parent_context(env)._asdict()).encode()
        with self._lock:
            if self.gone:
                raise OSError("the fork server has gone away")
            header = _REQUEST.pack(len(context))
            try:
                # The descriptors ride with the small header; the context follows
                # with sendall. One sendmsg of it all could go out in part (a
                # signal handler interrupting a send of a large environment) and
                # leave the server waiting for the rest forever.
                sent = socket.send_fds(self._sock, [header], list(fds))
                self._sock.sendall(header[sent:] + context)
                while True:
                    started = self._read(None)
                    if started:
                        return started[0]
                    if self.gone:
                        raise OSError("the fork server has gone away")
            except BaseException:
                # A reply may still be on its way (Ctrl-C arrived while we waited):
                # the replies would be out of step. Use a new server from now on.
                self.gone = True
                raise

    def status(self, pid: int, timeout: float) -> int | None:
        """The exit code of worker ``pid`` (negative: the signal), waiting up to
        ``timeout``; None if it is still running."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if pid in self._exited:
                    return self._exited[pid]
                if self.gone:  # nobody can tell how it ended, only whether it did
                    return None if shmem.alive(pid) else -1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._read(min(left, 0.05))

    def _read(self, timeout: float | None) -> list[int]:
        """Read what the server sent: exit statuses are recorded here (whoever
        reads them); the pids of started workers are returned."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if ready:
            try:
                data = self._sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                self.gone = True
                return []
            self._buffer += data
        started = []
        while len(self._buffer) >= _MESSAGE.size:
            kind, pid, status = _MESSAGE.unpack_from(self._buffer)
            self._buffer = self._buffer[_MESSAGE.size :]
            if kind == _STARTED:
                # Messages come in order: a status seen before this one belongs to
                # an earlier process that had the same pid.
                self._exited.pop(pid, None)
                started.append(pid)
            else:
                self._exited[pid] = status
                while len(self._exited) > _KEEP_STATUSES:  # the oldest go first
                    del self._exited[next(iter(self._exited))]
        return started

    def close(self) -> None:
        """Let go of a server that is gone (or out of step): its socket too."""
        from manycore._engine import _launch

        self.gone = True
        _launch.ENGINE_FDS.discard(self._sock.fileno())
        self._sock.close()


class ServedWorker:
    """A worker forked by the fork server (not our child: the server reports how
    it ended)."""

    def __init__(self, server: _Server, pid: int):
        self._server = server
        self.pid = pid

    def poll(self) -> int | None:
        return self._server.status(self.pid, 0)

    def wait(self, timeout: float) -> int | None:
        return self._server.status(self.pid, timeout)

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass


_server: _Server | None = None
_server_lock = threading.Lock()


def launch(
    task_fd: int, result_fd: int, slot_fd: int, env: dict[str, str], more: tuple[int, ...] = ()
) -> ServedWorker:
    """A worker with these descriptors, and ``more`` that its init needs; ``env``
    is added to its environment before it runs anything."""
    global _server
    fds = (task_fd, result_fd, slot_fd, *more)
    for attempt in range(2):
        with _server_lock:
            if _server is None or _server.gone:
                if _server is not None:
                    _server.close()
                _server = _Server()  # the first time, or the old one was killed
            server = _server
        try:
            return ServedWorker(server, server.start(fds, env))
        except OSError:
            server.gone = True
            if attempt:
                raise
    raise AssertionError("unreachable")


def server_pid() -> int | None:
    """The fork server's pid, if this process has started one."""
    return None if _server is None else _server.pid


def server_fd() -> int | None:
    """Our end of the socket to the fork server, if there is one (it stays open
    for the life of the process, like the server)."""
    return None if _server is None else _server.fileno()


def _forget_in_child() -> None:
    global _server, _server_lock
    _server = None  # the socket was closed with the other engine descriptors
    _server_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


# ------------------------------------------------------------------ the server


def serve(fd: int) -> None:
    """The fork server's loop (runs in its own process)."""
    # Loaded once here and inherited by every worker. A function of a script's
    # __main__ travels by value, and loading it imports cloudpickle (with inspect,
    # dataclasses...): ~16 ms in each worker's first task, on every pool.
    import cloudpickle  # noqa: F401

    from manycore._engine import _worker  # noqa: F401

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the user's process
    owner = os.getppid()
    sock = socket.socket(fileno=fd)
    exits = _hear_exits()
    while True:
        # A pool's shutdown waits for its workers' exit reports: they must go out
        # as the workers end, not at the next turn of a polling loop.
        woke, _, _ = select.select([fd, exits], [], [], _QUIET_TURN)
        if exits in woke:
            _drain(exits)
        fds: list[int] = []
        # Our process may be gone before it reads an exit report: a closed socket
        # then reads as the end, not as a traceback on the user's terminal.
        if not _report_exits(sock):
            request = b""
        elif fd not in woke:
            continue
        else:
            request = _read_request(sock, fds)
        context = _read_context(sock, request)
        if context is None:  # our process is gone: so are we (the workers see it too)
            _clean_up_after(owner)
            os._exit(0)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the new worker
            sock.close()
            _deaf_to_exits(exits)
            _run_worker(fds, context)
        for f in fds:
            os.close(f)
        sock.sendall(_MESSAGE.pack(_STARTED, pid, 0))


def _hear_exits() -> int:
    """A descriptor that becomes readable when a child of the server ends."""
    hear, tell = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(tell)
    # The wakeup descriptor is written only for a signal that has a Python handler.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    return hear


def _deaf_to_exits(hear: int) -> None:  # pragma: no cover - in a new worker
    """A worker starts with the default SIGCHLD, as a spawned one (its own
    subprocesses rely on it), and without the server's wakeup pipe."""
    tell = signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for end in (hear, tell):
        os.close(end)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _read_request(sock: socket.socket, fds: list[int]) -> bytes:
    try:
        request, received, _, _ = socket.recv_fds(sock, _REQUEST.size, 3 + MAX_FDS)
    except OSError:
        return b""
    fds.extend(received)
    return request


def _read_context(sock: socket.socket, request: bytes) -> dict[str, Any] | None:
    """The worker's context that follows a request's header; None when our
    process is gone (nothing, or only part of a request, came)."""
    if len(request) < _REQUEST.size:
        return None
    (size,) = _REQUEST.unpack(request)
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    context: dict[str, Any] = json.loads(data)
    return context


def _run_worker(fds: list[int], context: dict[str, Any]) -> None:  # pragma: no cover
    try:
        _adopt(context)
        from manycore._engine._worker import main

        main(fds[0], fds[1], fds[2], fds=tuple(fds[3:]))
    finally:
        os._exit(1)


def _adopt(context: dict[str, Any]) -> None:  # pragma: no cover - in the worker
    """Become what a spawned worker would be (see ``_launch.parent_context``)."""
    os.environ.clear()
    os.environ.update(context["environ"])
    if context["cwd"] is not None:
        try:
            os.chdir(context["cwd"])
        except OSError:  # removed since: the worker stays where the server is
            pass
    path = context["path"]
    sys.path[:] = path + [p for p in sys.path if p not in path]
    # The server's imports cached "no finder" for path entries missing at its
    # boot: a folder made since must be importable, as in a spawned worker.
    importlib.invalidate_caches()


def _clean_up_after(owner: int) -> None:
    """Our process closed its end: if it died rather than exited, nobody else will
    remove its shared-memory segments (its workers' parent is this server)."""
    time.sleep(0.5)  # a process that exits normally removes its own first
    if not shmem.alive(owner) or os.getppid() != owner:
        shmem.remove_segments_of(owner)


def _report_exits(sock: socket.socket) -> bool:
    """Tell our process which workers exited; False when it can no longer hear."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return True
        try:
            sock.sendall(_MESSAGE.pack(_EXITED, pid, os.waitstatus_to_exitcode(status)))
        except OSError:
            return False
