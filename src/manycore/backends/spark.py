"""``backend="spark"``: batches run as Spark jobs, one job of one task per batch.

``client=`` reuses a ``SparkSession`` (or ``SparkContext``) the caller made, and
leaves it running; with none, the pool starts ``local[workers]`` bound to
127.0.0.1 with its UI off, and stops it with the pool. See
:mod:`manycore.backends._cluster` for what this backend shares with Dask's and Ray's.

* Each batch is a job in a job group of its own, run from its own thread (a
  pyspark ``InheritableThread``, so the group is that thread's), so several
  batches are out at once and any one can be cancelled: a timeout or a forced
  cancel calls ``cancelJobGroup``, which interrupts the task; Spark then kills
  the Python worker running it (after ``spark.python.task.killTimeout``).
* The function goes in the job's closure (cloudpickled by Spark), the items
  with it; the shared object and large arrays go once, as broadcasts.
* Errors of the function come back packed by ``run_remote`` (their type kept:
  Spark's own ``PythonException`` keeps only the text); a job that fails
  otherwise (its Python worker died) is ``WorkerCrashed`` for its batch.
* The pool's own Spark runs no task twice (``local[N]`` gives a task one
  attempt): retries are manycore's ``retries=``.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from concurrent.futures import CancelledError, Future
from typing import Any

from manycore._core import PoolBroken
from manycore.backends._base import BackendOptions, register_backend
from manycore.backends._cluster import ClusterBackend, _Running
from manycore.backends._remote_run import Answer, ResultRef, run_remote

__all__ = ["SparkBackend"]

_START_TIMEOUT_ENV = "MANYCORE_SPARK_START_TIMEOUT"
_START_TIMEOUT = 120.0  # seconds for a local Spark to start (about 14 s on 2 cores)
_JAVA = (
    "backend='spark' starts a local Spark, which needs Java 17 (or 8/11): {why}; "
    "install a JDK (e.g. `apt-get install openjdk-17-jre-headless`) or pass "
    "client=<a running SparkSession>"
)


def _import() -> Any:  # the pyspark module
    try:
        import pyspark
    except ImportError:
        raise ImportError("backend='spark' needs pyspark: pip install pyspark") from None
    return pyspark


def _start_timeout() -> float:
    raw = os.environ.get(_START_TIMEOUT_ENV)
    return _START_TIMEOUT if not raw else float(raw)


def _check_java() -> None:
    home = os.environ.get("JAVA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", "java")):
        return
    if shutil.which("java") is None:
        raise RuntimeError(_JAVA.format(why="no `java` on PATH and JAVA_HOME unset"))


def _builder(workers: int) -> Any:
    from pyspark.sql import SparkSession

    conf = {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.task.maxFailures": "1",  # retries are manycore's
        "spark.pyspark.python": sys.executable,  # workers run this interpreter
        "spark.pyspark.driver.python": sys.executable,
    }
    builder = SparkSession.builder.master(f"local[{workers}]").appName("manycore")
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder


def _start_session(workers: int) -> Any:
    """A ``local[workers]`` SparkSession, started within the bound."""
    pyspark = _import()
    _check_java()
    if pyspark.SparkContext._active_spark_context is not None:  # noqa: SLF001  # pyspark's only "is one running" check
        raise RuntimeError(
            "a SparkContext already runs in this process (Spark allows one): pass "
            "it as client=spark instead of starting another"
        )
    out: list[Any] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            out.append(_builder(workers).getOrCreate())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=start, name="manycore-spark-start", daemon=True)
    thread.start()
    timeout = _start_timeout()
    thread.join(timeout)
    if errors:
        raise RuntimeError(
            f"could not start a local Spark (local[{workers}] on 127.0.0.1): "
            f"{type(errors[0]).__name__}: {errors[0]!s:.400}"
        ) from errors[0]
    if not out:
        raise TimeoutError(
            f"a local Spark (local[{workers}]) did not start within {timeout:g} s "
            f"({_START_TIMEOUT_ENV} sets the bound); is the machine overloaded, or Java broken?"
        )
    return out[0]


def _close_gateway() -> None:
    """Stop the JVM pyspark launched for the pool's own Spark: ``stop()`` leaves
    it running (for a later context) until the interpreter exits. pyspark then
    launches a fresh one for the next context."""
    context = _import().SparkContext
    gateway = context._gateway  # noqa: SLF001  # pyspark keeps its JVM's handle there only
    if gateway is None:
        return
    context._gateway = context._jvm = None  # noqa: SLF001  # (so the next start launches one)
    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    except Exception:  # the JVM is gone already
        pass
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:  # it ignored SIGTERM
            proc.kill()
            proc.wait(10)


def _value(ref: Any) -> Any:
    """A broadcast's value on the worker (other arguments as they are)."""
    from pyspark.broadcast import Broadcast

    return ref.value if isinstance(ref, Broadcast) else ref


def _run_job(args: tuple[Any, ...], _: object) -> Answer:
    """run_remote on a Spark worker, broadcasts read."""
    fn, items, how, kwargs, setup, shared, *refs = args
    return run_remote(
        _value(fn), items, how, kwargs, setup, _value(shared), *(_value(r) for r in refs)
    )


def _spark_reason(exc: BaseException) -> str:
    """The Java side's one-line reason for a failed job (py4j's own text is a
    whole Java stack trace)."""
    java = getattr(exc, "java_exception", None)
    try:
        text = str(java.toString()) if java is not None else str(exc)
    except Exception:  # the gateway is going
        text = str(exc)
    return text.strip().splitlines()[0][:400] if text.strip() else repr(exc)


class _Job:
    """One batch's Spark job: its group, and the future its thread fills."""

    __slots__ = ("cancelled", "future", "group")

    def __init__(self) -> None:
        self.group = f"manycore-{uuid.uuid4().hex}"
        self.future: Future[Answer] = Future()
        self.cancelled = False


@register_backend
class SparkBackend(ClusterBackend[_Job]):
    name = "spark"
    supports_kill = True  # cancelJobGroup interrupts the task, Spark kills its worker
    # A Spark job costs 30-150 ms (scheduling, a task, the Python worker's round
    # trip; more on a busy machine): batches of about a second (measured with
    # benchmarks/clusters_spark.py: 100k tiny items 1.75 s at 0.2 s, 0.69 s at 1 s).
    batch_seconds = 1.0
    batch_overhead = 0.2
    timed_out_how = "its Spark job was cancelled and its Python worker killed"
    accepts = frozenset({"client"})
    needs_package = ("pyspark", "pyspark")

    @classmethod
    def misplaced(cls, name: str, value: object, backend: str) -> str:
        return f"client= is an existing engine handle, not an option of backend={backend!r}"

    def __init__(self, options: BackendOptions):
        self._session: Any = None
        self._sc: Any = None
        self._owned = False
        self._own_jvm = False  # the pool launched Spark's JVM: stopped with it
        self._where = "the pool's local Spark"
        super().__init__(options)

    def _connect(self) -> None:
        given = self.options.client
        if given is None:
            jvm_running = _import().SparkContext._gateway is not None  # noqa: SLF001  # (see _close_gateway)
            self._own_jvm = not jvm_running
            self._session = _start_session(self.options.workers)
            self._owned = True
            self._session.sparkContext.setLogLevel("ERROR")
        else:
            _import()
            self._session = given
            self._where = "the given Spark session"
        # A SparkSession has .sparkContext; a SparkContext is its own.
        self._sc = getattr(self._session, "sparkContext", self._session)
        self._workers = max(1, int(self._sc.defaultParallelism))

    @property
    def workers(self) -> int:
        return self._workers

    def _put(self, obj: object) -> Any:
        return self._sc.broadcast(obj)

    def result_ref(self, batch: Any) -> ResultRef | None:
        return None  # a job's result lives on the driver: passed as a value

    def _send(self, args: tuple[object, ...], record: _Running[_Job]) -> _Job:
        from pyspark import InheritableThread

        job = _Job()
        thread = InheritableThread(target=self._run, args=(args, record, job), daemon=True)
        thread.name = f"manycore-spark-{job.group[-8:]}"
        thread.start()
        return job

    def _run(self, args: tuple[object, ...], record: _Running[_Job], job: _Job) -> None:
        """The batch's job, from its own thread (the job group is this thread's)."""
        sc = self._sc
        try:
            sc.setJobGroup(job.group, "manycore batch", interruptOnCancel=True)
            rdd = sc.parallelize([0], 1).map(lambda x: _run_job(args, x))
            job.future.set_result(rdd.collect()[0])
        except BaseException as exc:
            job.future.set_exception(CancelledError() if job.cancelled else exc)
        self._finished(record, job)

    def _outcome(self, handle: _Job | None) -> Answer:
        assert handle is not None
        try:
            return handle.future.result()
        except CancelledError:
            raise
        except Exception as exc:
            if not self._alive():
                raise PoolBroken(f"{self._where} stopped under the pool ({exc!s:.200})") from exc
            raise RuntimeError(_spark_reason(exc)) from exc

    def _stop(self, handle: _Job | None, force: bool) -> None:
        if handle is None:
            return
        handle.cancelled = True
        try:
            self._sc.cancelJobGroup(handle.group)
        except Exception:  # the context is stopped already: nothing left to stop
            pass

    def _has_started(self, record: _Running[_Job]) -> bool:
        """Whether its task runs (not waiting for a core)."""
        if record.handle is None or not self._alive():
            return True
        try:
            tracker = self._sc.statusTracker()
            for job_id in tracker.getJobIdsForGroup(record.handle.group):
                info = tracker.getJobInfo(job_id)
                for stage in info.stageIds if info is not None else ():
                    stage_info = tracker.getStageInfo(stage)
                    if stage_info is not None and stage_info.numActiveTasks > 0:
                        return True
        except Exception:  # the context is going: _health says so
            return True
        return False

    def _alive(self) -> bool:
        return self._sc is not None and self._sc._jsc is not None  # noqa: SLF001  # pyspark's stopped flag

    def _health(self) -> BaseException | None:
        if self._alive():
            return None
        return PoolBroken(f"{self._where} was stopped: the tasks that were out are lost")

    def _disconnect(self) -> None:
        if self._owned and self._session is not None:
            try:
                self._session.stop()
            except Exception:  # stopped already
                pass
        if self._own_jvm:
            _close_gateway()
        self._owned = self._own_jvm = False
