"""The loop that runs inside each worker process.

A worker reads frames from its task pipe, runs each batch with
:func:`manycore._core._batch.run_batch` and writes one result frame per batch. Its main
thread blocks only in ``read`` on its task pipe. A closing pool sends an empty
frame (STOP) and closes the pipe: the worker exits. End of file without STOP means
the parent may have died: the worker waits (briefly) for the kernel to confirm it,
removes the parent's shared-memory segments and its own, and exits. A watchdog
thread does the same for a worker whose parent died while it was busy.

The worker tells the parent through its slot when it booted, when its init
returned and which batch it last read, so the parent can judge a late or dead
worker (see :mod:`manycore._engine._faults`).

When a batch has a timeout, the worker writes which item runs since when into a
small shared-memory slot before each item; the parent reads it and kills the
worker when an item overstays (a kill works even inside C code that holds the
GIL, which no in-process alarm can interrupt). With ``max_tasks_per_worker`` or
``max_memory_per_worker`` the worker stops early, reports the items it did not run
and exits ("retires"); the parent runs those items elsewhere and starts a
replacement.
"""

from __future__ import annotations

import _thread
import contextlib
import mmap
import os
import pickle
import select
import signal
import struct
import sys
import time

from manycore._core import BatchResult, cpus, pack_exception, run_batch, run_tracked, task_state
from manycore._engine import _inherit
from manycore._transport import Mappings, bigglobals, dumps, loads_code, shmem, wire

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from manycore._engine._inherit import Setup
    from manycore._transport import Shared

__all__ = ["main"]

_HEAD = struct.Struct("<I")  # size of the task's head, before its body

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_ORPHAN_GRACE = 1.0  # seconds between the parent's death being seen and exiting
_stopping = False  # the task pipe has ended (STOP): exit() and queue flushes run
# Until the first frame after the configuration: the worker is starting (reading
# its configuration, running init). A pool closed meanwhile has hung up the pipe,
# but its STOP is still to be read: the parent waits for that, and so does the
# watcher (else a pool closed at once ended its workers before their init ran).
_starting = True
_SWEEP_MS = 1000  # how often an idle worker unmaps segments the parent removed


def _encode_result(key: int, result: BatchResult, kept: bool = False) -> bytes:
    failures = None
    if result.failures:
        failures = {i: pack_exception(e) for i, e in result.failures.items()}
    tail = (kept, result.slowest, result.moving)
    message = (wire.RESULT, key, result.values, failures, result.elapsed, result.unrun, *tail)
    try:
        return _with_big_buffers(message)
    except BaseException:  # a result's __reduce__ ran: even SystemExit fails its item
        pass
    # Some value will not pickle: fail those items alone, keep the others.
    from manycore._core import SerializationError, set_cause
    from manycore._transport import why

    values = list(result.values)
    failures = dict(failures or {})
    for i, value in enumerate(values):
        try:
            dumps(value, to_worker=False)  # the same checks as the message
        except BaseException as exc:
            values[i] = None
            err = SerializationError(
                f"cannot pickle the result of type {type(value).__name__!r} to send it "
                f"back from the worker: {why(exc)}"
            )
            set_cause(err, exc)
            failures[i] = pack_exception(err)
    message = (wire.RESULT, key, values, failures, result.elapsed, result.unrun, *tail)
    return _with_big_buffers(message)


def _with_big_buffers(message: object) -> bytes:
    """Pickle a result message; its large buffers go into a shared-memory segment
    that the parent maps (and removes), and the pipe carries only their places."""
    big: list[memoryview] | None = [] if shmem.available() else None
    data = dumps(message, big, to_worker=False)
    if not big:
        return data
    try:
        segment, spans = shmem.pack(big)
    except OSError:  # no room in /dev/shm (a small container): through the pipe
        return dumps(message, to_worker=False)
    del big
    segment.close()
    return pickle.dumps((wire.RESULT_OOB, segment.name, spans, data), 5)


class _Limits:
    """This worker's progress slot and restart limits (``max_tasks_per_worker``,
    ``max_memory_per_worker``)."""

    def __init__(self, slot: mmap.mmap | None, max_tasks: int | None, max_memory: int | None):
        self.slot = slot
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.done = 0  # items run so far
        self.key = 0  # the batch being run (for the slot)
        self._gen = 0  # the slot's seqlock counter (see wire)
        self._statm = -1

    def run(
        self,
        fn: Callable[..., object],
        items: Sequence[Any],
        star: bool,
        kwargs: dict[str, object] | None,
        track: bool,
        time_items: bool,
    ) -> tuple[BatchResult, bool]:
        """Run a batch within the limits: (BatchResult, whether to retire after it)."""
        n = len(items)
        budget = n if self.max_tasks is None else min(n, self.max_tasks - self.done)
        todo = items[:budget] if budget < n else items
        if (track and self.slot is not None) or self.max_memory is not None:
            result = run_tracked(fn, todo, star, kwargs, BaseException, self._mark)
            # Nothing runs now: sending the result must not count against the last
            # item's timeout, nor a stale record against the next batch.
            self._publish(0, -1, 0.0)
        else:
            result = run_batch(fn, todo, star, kwargs, BaseException, time_items)
        ran = len(todo) - sum(hi - lo for lo, hi in result.unrun or ())
        if budget < n:
            result.values.extend([None] * (n - budget))
            if result.unrun is None:
                result.unrun = [(budget, n)]
            else:  # stopped for memory inside the budget: one range to the end
                result.unrun = [(result.unrun[0][0], n)]
        self.done += ran
        retire = bool(result.unrun) or (self.max_tasks is not None and self.done >= self.max_tasks)
        return result, retire or self._over_memory()

    def _mark(self, offset: int) -> bool:
        if offset and self._over_memory():
            return False  # the item before pushed memory past the limit: retire
        self._publish(self.key, offset, time.monotonic())
        return True

    def _publish(self, key: int, offset: int, started: float) -> None:
        slot = self.slot
        if slot is not None:
            self._gen += 1  # odd: a write is under way
            wire.GEN.pack_into(slot, 0, self._gen)
            wire.RUNNING.pack_into(slot, wire.GEN.size, key, offset, started)
            self._gen += 1
            wire.GEN.pack_into(slot, 0, self._gen)

    def _over_memory(self) -> bool:
        return self.max_memory is not None and self._rss() > self.max_memory

    def _rss(self) -> int:
        """Resident memory of this worker's own (not shared) pages, in bytes: a
        shared array or Pool(shared=...) it maps is not its to give back.
        /proc on Linux (resident minus shared pages, a few microseconds), else psutil."""
        if self._statm == -1:
            try:
                self._statm = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError:
                self._statm = -2
        if self._statm >= 0:
            fields = os.pread(self._statm, 128, 0).split()
            return (int(fields[1]) - int(fields[2])) * _PAGE
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except ImportError:  # peak, not current: errs towards restarting
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_blas_limit: object = None  # keeps threadpoolctl's limit in force


def _limit_blas(threads: int) -> None:
    """Cap the threads of BLAS/OpenMP libraries: those loaded later read the
    environment; those already loaded (a forked worker inherits NumPy) are
    limited through threadpoolctl."""
    global _blas_limit
    for name in cpus.BLAS_ENV:
        os.environ[name] = str(threads)
    if "numpy" in sys.modules or "scipy" in sys.modules:
        from threadpoolctl import threadpool_limits

        _blas_limit = threadpool_limits(limits=threads)


class _Owner:
    """The process whose pool this worker serves (for ``fork`` and ``spawn`` its
    parent; for ``forkserver`` the server is the parent), known from the
    configuration: whether it died, and removing its segments if so."""

    pid: int | None = None
    parent = 0  # our parent when we started (an orphan's changes)
    fd: int | None = None  # a pidfd: readable once it has exited (even as a zombie)

    @classmethod
    def know(cls, pid: int) -> None:
        cls.pid, cls.parent = pid, os.getppid()
        opener = getattr(os, "pidfd_open", None)
        if opener is not None:
            with contextlib.suppress(OSError):
                cls.fd = opener(pid)  # while it lives: its pid cannot be reused meanwhile

    @classmethod
    def gone(cls, within: float) -> bool:
        """Whether it has died, waiting up to ``within`` seconds for it: its end of
        our pipes closes as it exits, a moment before the kernel calls it dead."""
        if cls.pid is None:
            return False
        if cls.fd is not None:
            poller = select.poll()  # (not select(): any descriptor number works)
            poller.register(cls.fd, select.POLLIN)
            with contextlib.suppress(OSError):
                return bool(poller.poll(within * 1000))
        deadline = time.monotonic() + within  # no pidfd (not Linux 5.3+): look, sleep
        while shmem.alive(cls.pid) and not (cls.parent == cls.pid != os.getppid()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    @classmethod
    def clean_up_if_gone(cls, within: float) -> None:
        """A pipe to the parent ended without STOP: if the owner died, remove the
        segments it and we made (nobody else will, until some later pool starts)."""
        if cls.gone(within):
            with contextlib.suppress(Exception):
                assert cls.pid is not None
                shmem.remove_segments_of(cls.pid)
                shmem.remove_segments_of(os.getpid())


def _watch_parent(task_fd: int, mappings: Mappings) -> None:
    """Exit when the parent is gone, even while a task runs.

    The parent holds the only write end of the task pipe, so the pipe hangs up
    when it dies (even by SIGKILL). An idle worker sees that as end of file in its
    read; a busy one is stopped here, after a grace period that lets a worker
    being closed normally finish on its own and flush its output. It also
    unmaps, about once a second, cached argument segments the parent removed.
    """
    poller = select.poll()
    poller.register(task_fd, select.POLLHUP)
    while True:
        try:
            events = poller.poll(_SWEEP_MS)
        except InterruptedError:
            continue
        if not events:
            mappings.sweep()
            continue
        if any(mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in events):
            break
    # A closing pool normally ends us within the grace period; a parent that
    # died does not: remove the segments it and we made, then go.
    _Owner.clean_up_if_gone(_ORPHAN_GRACE)
    # But a worker that took its STOP is running exit() or flushing multiprocessing
    # queues (cut short, a message torn mid-write leaves its queue unreadable):
    # the live parent gives it its own grace, and kills it past that.
    while (_stopping or _starting) and not _Owner.gone(_ORPHAN_GRACE):
        if _Owner.pid is None:  # the configuration is not read yet: gone() cannot wait
            time.sleep(0.02)
    _Owner.clean_up_if_gone(0.0)
    os._exit(0)


def _serve(
    task_fd: int, result_fd: int, slot_fd: int, mappings: Mappings, inherited: Setup | None = None
) -> int:
    first = wire.read_frame(task_fd)
    if first is None:
        return 0
    config = pickle.loads(first)
    _, init_blob, max_tasks, max_memory, blas_threads, shared_blob, authkey, owner = config
    _inherit.take_authkey(authkey)
    _Owner.know(owner)
    slot = mmap.mmap(slot_fd, wire.SLOT_SIZE) if slot_fd >= 0 else None
    if slot is not None:
        os.close(slot_fd)
        wire.TIME.pack_into(slot, wire.BOOTED_AT, time.monotonic())
    if blas_threads is not None:
        _limit_blas(blas_threads)
    # Pools started from a task (a nested mc.map) keep within this worker's share.
    cpus.set_worker_share(blas_threads or 1)
    exit_fn = None
    try:
        task_state.set_process(shared_obj=_load_shared(shared_blob))
        state = None
        if init_blob is not None:
            inherited = loads_code(init_blob)
        if inherited is not None:
            init, init_args, exit_fn = inherited
            if init is not None:
                state = init(*init_args)
        task_state.set_process(state=state)
        if slot is not None:
            wire.TIME.pack_into(slot, wire.READY_AT, time.monotonic())
    except BaseException as exc:
        message = pickle.dumps((wire.INIT_FAILED, pack_exception(exc)), 5)
        wire.write_all(result_fd, wire.frame(message))
        return 3
    try:
        return _loop(task_fd, result_fd, _Limits(slot, max_tasks, max_memory), mappings)
    finally:
        if exit_fn is not None:
            _run_exit(exit_fn)


def _load_shared(blob: Shared | None) -> object:
    if blob is None:
        return None
    data, name, spans = blob
    if name is None or spans is None:  # (both None together)
        return pickle.loads(data)
    segment = shmem.Segment.attach(name, populate=False, readonly=True)
    return pickle.loads(data, buffers=shmem.views(segment, spans))


def _run_exit(exit_fn: Callable[[], object]) -> None:
    """The pool's ``exit`` as the worker stops normally (not when it is killed);
    its error is printed, not raised: the worker is going anyway."""
    try:
        exit_fn()
    except BaseException:
        import traceback

        traceback.print_exc()


def _loop(task_fd: int, result_fd: int, limits: _Limits, mappings: Mappings) -> int:
    """Read batches, run them, write results, until the pipe closes or we retire."""
    global _stopping, _starting
    slot = limits.slot
    plain = limits.max_tasks is None and limits.max_memory is None
    fns: dict[int, Callable[..., object] | _Unloadable] = {}
    clock = time.perf_counter
    # Seconds spent pickling the previous result: it is known only once that
    # result is gone, so it travels with the next one (for pool.stats()).
    encoding = 0.0
    while True:
        data = wire.read_frame(task_fd)
        if not data:
            _stopping = True
            _starting = False
            if data is None:  # no STOP first: the parent may have died
                _Owner.clean_up_if_gone(_ORPHAN_GRACE)
            return 0
        _starting = False  # busy now: a hang-up mid-task is the watcher's to end
        began = clock()
        (head_size,) = _HEAD.unpack_from(data)
        view = memoryview(data)
        head = pickle.loads(view[4 : 4 + head_size])
        if head[0] is None:  # a large global, ahead of the function that reads it
            bigglobals.receive(head, view[4 + head_size :])
            del view, data
            continue
        key, fn_id, fn_blob, reset, star, track, oob, time_items = head
        if slot is not None:  # it is ours now: a death from here on is its failure
            wire.TIME.pack_into(slot, wire.ACK_TIME_AT, time.monotonic())
            wire.KEY.pack_into(slot, wire.ACK_AT, key)
        if reset:
            fns.clear()
        if fn_blob is not None:  # loaded even for a skipped batch: later ones refer to it
            fns[fn_id] = _load_fn(fn_blob)
        if slot is not None and wire.SKIP.unpack_from(slot, wire.SKIP_AT)[0] == key:
            # Cancelled while it waited in the pipe: the parent drops the reply.
            _send(result_fd, _encode_result(key, BatchResult([], None, 0.0)))
            continue
        fn = fns[fn_id]
        try:
            if isinstance(fn, _Unloadable):  # each batch of it fails, not the worker
                _send(result_fd, _encode_batch_error(key, fn.error))
                continue
            segment, items, kwargs = _load_args(view[4 + head_size :], oob, mappings)
        except BaseException as exc:  # the batch fails, not the worker (even SystemExit)
            _send(result_fd, _encode_failure(key, exc))
            continue
        finally:
            del view, data
        loading = clock() - began
        if plain and not track:
            result = run_batch(fn, items, star, kwargs, BaseException, time_items)
            retire = False
        else:
            limits.key = key
            result, retire = limits.run(fn, items, star, kwargs, track, time_items)
        del items, kwargs, fn
        # An array the task (or its result) still holds keeps the mapping open:
        # then the parent must not reuse the segment for another task.
        kept = segment is not None and not mappings.give(segment)
        result.moving = loading + encoding
        began = clock()
        _send(result_fd, _encode_result(key, result, kept))
        encoding = clock() - began
        if retire:  # a message of its own: it must arrive even if the result won't load
            _send(result_fd, pickle.dumps((wire.RETIRE,), 5))
            return 0


def _send(fd: int, payload: bytes) -> None:
    wire.write_all(fd, wire.frame(payload))


def _load_args(
    body: memoryview, oob: tuple[str, list[tuple[int, int]]] | None, mappings: Mappings
) -> tuple[shmem.Segment | None, Sequence[Any], dict[str, object] | None]:
    """A batch's (segment, items, kwargs); its large buffers mapped, not copied."""
    if oob is None:
        items, kwargs = pickle.loads(body)
        return None, items, kwargs
    segment = mappings.take(oob[0])
    try:
        items, kwargs = pickle.loads(body, buffers=shmem.views(segment, oob[1]))
    except BaseException:
        mappings.give(segment)
        raise
    return segment, items, kwargs


class _Unloadable:
    """A function whose pickle did not load here: the error each batch of it gets."""

    def __init__(self, error: BaseException):
        self.error = error


def _load_fn(fn_blob: bytes) -> Callable[..., object] | _Unloadable:
    """The task's function, or why it cannot be loaded here (a module this
    worker cannot import): its batches fail with that, the worker lives on."""
    from manycore._core import SerializationError, set_cause

    try:
        fn: Callable[..., object] = loads_code(fn_blob)
        return fn
    except BaseException as exc:  # the user's code ran (a module's import): even SystemExit
        err = SerializationError(
            f"the task's function could not be unpickled in the worker process: "
            f"{type(exc).__name__}: {exc}. "
            "A worker imports the function's module by its name: make that module "
            "importable there (on sys.path when the pool starts), or define the "
            "function in the script itself."
        )
        set_cause(err, exc)
        return _Unloadable(err)


def _encode_failure(key: int, exc: BaseException) -> bytes:
    """A batch whose arguments could not be loaded here: it fails as a whole."""
    from manycore._core import SerializationError, set_cause

    err = SerializationError(f"a task's arguments could not be unpickled in the worker: {exc!r}")
    set_cause(err, exc)
    return _encode_batch_error(key, err)


def _encode_batch_error(key: int, err: BaseException) -> bytes:
    # Every item of the batch gets the error (values None: "the whole batch").
    message = (wire.RESULT, key, None, pack_exception(err), 0.0, None, True, None, 0.0)
    return pickle.dumps(message, 5)


def _close_in_child(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def main(
    task_fd: int,
    result_fd: int,
    slot_fd: int = -1,
    fds: tuple[int, ...] = (),
    inherited: Setup | None = None,
) -> None:
    """Entry point of a worker process; never returns. ``fds``: the descriptors
    its pickled init needs; ``inherited``: (init, init_args, exit) themselves,
    in a forked worker (see :mod:`manycore._engine._inherit`)."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides
    # what stops, so the workers ignore it rather than dying mid-item.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from manycore._transport import shared_arrays

    shared_arrays.IN_WORKER = True
    # A subprocess the task starts must not hold our pipes: the parent would see
    # no end of file when it kills this worker (a timeout), nor we when it dies.
    for fd in (task_fd, result_fd):
        os.set_inheritable(fd, False)
    os.register_at_fork(after_in_child=lambda: _close_in_child(task_fd, result_fd))
    mappings = Mappings()
    # A bare thread: threading.Thread.start() waits until the new thread has run,
    # and a worker booting beside its siblings on busy cores waits a time slice
    # for that (~2 ms measured on 2 cores). The watcher needs no such handshake,
    # nor a join: the worker ends with os._exit.
    _thread.start_new_thread(_watch_parent, (task_fd, mappings))
    code = 1
    try:
        _inherit.receive(fds)
        code = _serve(task_fd, result_fd, slot_fd, mappings, inherited)
    except BrokenPipeError:
        code = 0  # the parent is gone: nobody to report to
        _Owner.clean_up_if_gone(_ORPHAN_GRACE)
    except BaseException:  # a broken pipe or a bug here: say so, then exit
        import traceback

        traceback.print_exc()
    finally:
        _finish_multiprocessing()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _finish_multiprocessing() -> None:
    """What a multiprocessing child does as it exits: flush what tasks put in its
    queues (a feeder thread writes them), close its manager connections. Bounded:
    a queue nobody reads could block it, and a worker that overstays its close
    is killed."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        with contextlib.suppress(Exception):
            util._exit_function()  # noqa: SLF001 - what multiprocessing runs at exit
