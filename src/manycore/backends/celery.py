"""``backend="celery"``: batches run as tasks of manycore's Celery app, through a
Redis broker that also keeps the results.

``address=`` is the broker (``"redis://host:6379/0"``). Where Celery workers of
manycore's app answer there, the pool uses them and starts nothing; where none
do, it starts ``workers`` local worker processes on that broker (one Celery
worker, prefork) and stops them with the pool. With no address, it also starts
a Redis of its own on a free loopback port. Remote machines start theirs with
``manycore celery-worker --broker URL`` (see :mod:`._celery_app`).

* Results: each arrives as a Redis message (Celery publishes a result as it
  stores it; one subscription reads them all), is read once and deleted, so
  Redis does not grow; a sweep every second finds one whose message was missed.
* Timeouts: one item per task, manycore's watchdog (see ``_cluster``), which
  ``revoke(terminate=True)``s the task (its worker process is killed and
  replaced); Celery's hard ``time_limit`` a few seconds later backs it up.
* A worker process that dies fails its task with Celery's ``WorkerLostError``:
  ``WorkerCrashed`` for that task's items only. Celery never retries: manycore's
  ``retries=`` decide.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import CancelledError
from typing import Any

from manycore._core import PoolBroken
from manycore.backends._base import BackendOptions, register_backend
from manycore.backends._cluster import ClusterBackend, _Running
from manycore.backends._ray_connect import connect_bound
from manycore.backends._remote_run import Answer, ResultRef

__all__ = ["CeleryBackend", "worker_command"]

_APP = "manycore.backends._celery_app"
_START_BOUND = 60.0  # seconds for a local worker (or Redis) to answer
_PING = 1.0  # seconds the workers have to answer a ping
_HARD_GRACE = 5  # seconds after manycore's timeout before Celery's own hard limit
_SWEEP = 1.0  # seconds between looks at every result still out
_STOP_GRACE = 3.0  # seconds for a process to stop on SIGTERM before SIGKILL
_LATE = 60.0  # seconds a stopped task's late results are still deleted
_READY = ("SUCCESS", "FAILURE", "REVOKED")


def _import() -> Any:  # the celery module
    try:
        import celery
    except ImportError:
        raise ImportError("backend='celery' needs celery: pip install 'celery[redis]'") from None
    return celery


def worker_command(broker: str, concurrency: int | None = None) -> list[str]:
    """The command that starts a Celery worker of manycore's app on ``broker``."""
    cmd = [sys.executable, "-m", "celery", "-A", _APP, "-b", broker, "--result-backend", broker]
    cmd += ["worker", "-Q", "manycore", "-l", "WARNING"]
    cmd += ["--without-gossip", "--without-mingle", "-P", "prefork"]
    return cmd + ([] if concurrency is None else ["-c", str(concurrency)])


class _Task:
    """A task sent: its id, whether it has started, and its result once read."""

    __slots__ = ("id", "meta", "record", "started")

    def __init__(self, task_id: str, record: _Running[_Task]):
        self.id = task_id
        self.record = record
        self.started = False
        self.meta: dict[str, Any] | None = None


class _Owned:
    """A process the pool started (Redis, a Celery worker), in a session of its
    own, with its output in a file for errors."""

    def __init__(self, what: str, cmd: list[str], env: dict[str, str] | None = None):
        self.what = what
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, _STOP_GRACE), (signal.SIGKILL, _STOP_GRACE)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        self._kill_group()
        self.log.close()

    def _kill_group(self) -> None:
        """The worker's children too (the group outlives its leader)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@register_backend
class CeleryBackend(ClusterBackend[_Task]):
    name = "celery"
    supports_kill = True  # revoke(terminate=True) kills the worker process running it
    timed_out_how = "its Celery task was revoked (its worker process killed)"
    needs_package = ("celery", "celery[redis]")
    accepts = frozenset({"address"})  # no gpus=: Celery has no resources to ask for
    worker_command = staticmethod(worker_command)  # (for `manycore celery-worker`)

    @classmethod
    def check_options(cls, workers: int | None, given: Any) -> int | None:
        """``address=`` is a Redis broker URL; ``workers=`` with it is allowed (the
        local workers started when none answer there)."""
        address = given.get("address")
        if address is not None and not (isinstance(address, str) and "://" in address):
            raise TypeError(
                f"address must be a broker URL (redis://host:port/db), got {address!r:.80}"
            )
        return workers

    def __init__(self, options: BackendOptions):
        self._owned: list[_Owned] = []
        self._tasks: dict[str, _Task] = {}  # by id: out, not read yet
        # Stopped tasks read already, whose worker may store a second state (a
        # revoke, then the killed process's loss): deleted again, for a while.
        self._gone: dict[str, float] = {}
        self._workers = options.workers
        self._url = options.address or ""
        self._app: Any = None
        self._redis: Any = None
        self._pubsub: Any = None
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        super().__init__(options)

    # ---------------------------------------------------------------- connect

    def _connect(self) -> None:
        _import()
        try:
            if not self._url:
                self._url = self._start_redis()
            self._open()
            found = self._count()
            if not found:
                self._start_workers(self.options.workers)
                found = self._wait_for_workers()
            self._workers = found
        except BaseException:
            self._disconnect()
            raise
        self._reader = threading.Thread(
            target=self._read_results, name="manycore-celery-results", daemon=True
        )
        self._reader.start()

    def _start_redis(self) -> str:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError(
                "backend='celery' with no address= starts a local Redis, and redis-server "
                "is not installed (apt-get install redis-server); or give "
                "address='redis://host:6379/0'"
            )
        port = _free_port()
        cmd = [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self._owned.append(_Owned("redis-server", cmd))
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + _START_BOUND
        while not self._answers(url):
            self._check_owned()
            if time.monotonic() > deadline:
                raise ConnectionError(f"the pool's redis-server on port {port} does not answer")
            time.sleep(0.05)
        return url

    @staticmethod
    def _answers(url: str) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def _open(self) -> None:
        """The pool's Celery app and Redis client on the broker, checked within
        MANYCORE_CONNECT_TIMEOUT."""
        import redis
        from celery import Celery

        from manycore.backends._celery_app import configure

        bound = connect_bound()
        client: Any = redis.Redis.from_url(self._url, socket_connect_timeout=bound)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise ConnectionError(
                f"address={self._url!r}: no Redis answers there within {bound:g}s ({exc}); "
                "start one (redis-server) or check the URL and its password"
            ) from None
        self._redis = client
        app = Celery("manycore-pool", set_as_current=False)
        configure(app, self._url)
        # The pool reads results itself: Celery must not subscribe to each task.
        app.backend.on_task_call = lambda producer, task_id: None
        self._app = app
        self._prefix = app.backend.task_keyprefix
        if isinstance(self._prefix, bytes):
            self._prefix = self._prefix.decode()
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(f"{self._prefix}*")

    def _start_workers(self, count: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        if os.geteuid() == 0:
            # Celery refuses pickle as root; these workers run what this root process
            # sends them, on its broker: no more than the pool itself could run.
            env["C_FORCE_ROOT"] = "1"
        cmd = [*worker_command(self._url, count), "-n", f"manycore-{uuid.uuid4().hex[:8]}@%h"]
        self._owned.append(_Owned("celery worker", cmd, env))

    def _wait_for_workers(self) -> int:
        deadline = time.monotonic() + _START_BOUND
        while time.monotonic() < deadline:
            self._check_owned()
            found = self._count()
            if found:
                return found
        raise ConnectionError(
            f"the pool's Celery worker on {self._url} did not answer within {_START_BOUND:g}s"
        )

    def _check_owned(self) -> None:
        for owned in self._owned:
            if owned.proc.poll() is not None:
                raise RuntimeError(
                    f"the pool's {owned.what} exited ({owned.proc.returncode}):\n{owned.tail()}"
                )

    def _count(self) -> int:
        """Worker processes on the broker that read manycore's queue, by their own
        report (bounded: those that answer within a second; another app's workers
        on the same broker are not counted)."""
        from manycore.backends._celery_app import QUEUE

        try:
            inspect = self._app.control.inspect(timeout=_PING)
            queues = inspect.active_queues() or {}
            ours = [w for w, qs in queues.items() if any(q.get("name") == QUEUE for q in qs)]
            stats = inspect.stats() or {} if ours else {}
        except Exception:  # the broker went away: _health says so
            return 0
        return sum(int(stats.get(w, {}).get("pool", {}).get("max-concurrency", 1)) for w in ours)

    @property
    def workers(self) -> int:
        return max(1, self._workers)

    # ----------------------------------------------------------------- tasks

    def make_sync(self, kind: str, args: tuple[object, ...]) -> object:
        raise NotImplementedError(
            f"pool.{kind}() is not available on backend='celery' (Celery has no shared "
            "objects); use Redis itself from the tasks (redis-py's Lock, INCR, lists)"
        )

    def _put(self, obj: object) -> object:
        return obj  # no object store: sent with each task (inside its pickle)

    def result_ref(self, batch: Any) -> ResultRef | None:
        return None  # results are deleted once read: graphs pass values

    def _send(self, args: tuple[object, ...], record: _Running[_Task]) -> _Task:
        import cloudpickle

        task = _Task(uuid.uuid4().hex, record)
        payload = cloudpickle.dumps(args)
        timeout = record.batch.timeout
        limit = None if timeout is None else math.ceil(timeout) + _HARD_GRACE
        with self._lock:
            self._tasks[task.id] = task  # before it can finish
        try:
            self._app.send_task(
                "manycore.run_batch", args=(payload,), task_id=task.id, time_limit=limit
            )
        except BaseException:
            with self._lock:
                self._tasks.pop(task.id, None)
            raise
        return task

    def _read_results(self) -> None:
        swept = time.monotonic()
        while not self._stopping.is_set():
            try:
                message = self._pubsub.get_message(timeout=_SWEEP)
                if message is not None and message.get("type") == "pmessage":
                    self._heard(message["channel"], message["data"])
                if time.monotonic() - swept >= _SWEEP:
                    swept = time.monotonic()
                    self._sweep()
            except Exception:  # the broker is gone: _health says so
                if self._stopping.wait(_SWEEP):
                    return

    def _heard(self, channel: bytes | str, data: bytes) -> None:
        key = channel.decode() if isinstance(channel, bytes) else channel
        task_id = key[len(self._prefix) :]
        with self._lock:
            task = self._tasks.get(task_id)
            late = task is None and task_id in self._gone
        if task is not None:
            self._take(task, self._app.backend.decode_result(data))
        elif late:
            self._redis.delete(key)

    def _sweep(self) -> None:
        """Results whose message was missed (a reconnect): read from their keys."""
        with self._lock:
            tasks = list(self._tasks.values())
        if not tasks:
            return
        keys = [f"{self._prefix}{t.id}" for t in tasks]
        for task, data in zip(tasks, self._redis.mget(keys), strict=True):
            if data is not None:
                self._take(task, self._app.backend.decode_result(data))

    def _take(self, task: _Task, meta: dict[str, Any]) -> None:
        status = meta.get("status")
        if status not in _READY:
            task.started = True
            return
        with self._lock:
            if self._tasks.pop(task.id, None) is None:
                return  # read already (the sweep and the message both found it)
        task.meta = meta
        self._redis.delete(f"{self._prefix}{task.id}")  # read once: Redis must not grow
        if task.record.stop_asked:
            self._forget_later(task.id)
        self._finished(task.record, task)

    def _forget_later(self, task_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._gone[task_id] = now + _LATE
            for old in [k for k, until in self._gone.items() if until < now]:
                del self._gone[old]

    def _outcome(self, handle: _Task | None) -> Answer:
        import cloudpickle

        assert handle is not None and handle.meta is not None
        status, result = handle.meta["status"], handle.meta["result"]
        if status == "SUCCESS":
            answer: Answer = cloudpickle.loads(result)
            return answer
        if status == "REVOKED":
            raise CancelledError()
        raise self._app.backend.exception_to_python(result)

    def _has_started(self, record: _Running[_Task]) -> bool:
        task = record.handle
        return task is None or task.started or task.meta is not None

    def _stop(self, handle: _Task | None, force: bool) -> None:
        if handle is None:
            return
        try:
            self._app.control.revoke(handle.id, terminate=force, signal="SIGKILL")
        except Exception:  # the broker is going: nothing left to stop
            pass

    def _alive(self) -> bool:
        try:
            return bool(self._redis.ping())
        except Exception:
            return False

    def _health(self) -> BaseException | None:
        if not self._alive():
            return PoolBroken(f"lost the Celery broker at {self._url}: the tasks out are lost")
        for owned in self._owned:
            if owned.proc.poll() is not None:
                return ConnectionError(
                    f"the pool's {owned.what} on {self._url} exited ({owned.proc.returncode})"
                )
        return None

    def _disconnect(self) -> None:
        self._stopping.set()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(connect_bound())
        self._forget_all()
        for owned in reversed(self._owned):  # workers first, then their Redis
            owned.stop()
        self._owned = []
        if self._app is not None:
            self._app.close()

    def _forget_all(self) -> None:
        """Results still out (cancelled, or left by a closing pool): not kept."""
        with self._lock:
            ids = list(self._tasks)
            self._tasks.clear()
        if ids and self._redis is not None:
            try:
                self._redis.delete(*[f"{self._prefix}{i}" for i in ids])
            except Exception:  # the broker is gone: its keys expire
                pass
