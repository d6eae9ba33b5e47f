"""A worker process as the parent sees it: its pipes and queue, what it is sent and
what comes back, its start and stop."""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from manycore._core import WorkerCrashed
    from manycore._engine._faults import Doom, Task
    from manycore._transport import Shared, Shipment

from manycore._core import (
    Batch,
    BatchResult,
    SerializationError,
    TaskTimeout,
    describe_exit,
    rebuild,
    set_cause,
    timed_out,
)
from manycore._engine import _launch
from manycore._engine._inherit import Inheritance
from manycore._transport import ctrl_c, shmem, wire

__all__ = [
    "Decoded",
    "WorkerHandle",
    "WorkerSpec",
    "close_fd",
    "crash_error",
    "decode_result",
    "start_worker",
    "stop_workers",
    "timeout_error",
]

_HEAD = struct.Struct("<I")  # size of a task's head, before its pickled items


def _slot_file() -> int:
    """A file of SLOT.size bytes in memory, to share with one worker."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("manycore-slot")
    else:  # pragma: no cover - not Linux: an unlinked temporary file
        import tempfile

        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    os.ftruncate(fd, wire.SLOT_SIZE)
    return fd


@dataclass(eq=False)
class WorkerHandle:
    proc: _launch.WorkerProcess
    task_fd: int  # parent writes tasks (non-blocking)
    result_fd: int  # parent reads results (non-blocking); EOF means the worker died
    inflight: deque[Task] = field(default_factory=deque)  # sent, oldest first
    out: deque[memoryview] = field(default_factory=deque)  # bytes not yet written
    known: set[int] = field(default_factory=set)  # function ids this worker caches
    globals: dict[str, int] = field(default_factory=dict)  # large global -> shipment it has
    frames: wire.FrameBuffer = field(default_factory=wire.FrameBuffer)
    writing: bool = False  # registered with the selector for write readiness
    dead: bool = False  # gets no more work (a write failed, or it is retiring)
    slot: mmap.mmap | None = None  # the item it runs and since when (see read_slot)
    retiring: bool = False  # it said it exits after its last result (task/memory limit)
    retired_at: float = 0.0  # when it said so
    # Why the parent killed it: ("timeout", task, offset) or ("cancel", task).
    doom: Doom | None = None
    index: int = 0  # its slot, 0..workers-1: a replacement takes over the slot

    def skip(self, key: int) -> None:
        """Ask the worker not to run the batch sent as ``key`` (queued in its pipe)."""
        if self.slot is not None:
            wire.SKIP.pack_into(self.slot, wire.SKIP_AT, key)

    def close_slot(self) -> None:
        if self.slot is not None:
            self.slot.close()
            self.slot = None

    def acked(self) -> int | None:
        """Key of the last batch the worker read from its pipe (None: unknown)."""
        if self.slot is None:
            return None
        key: int = wire.KEY.unpack_from(self.slot, wire.ACK_AT)[0]
        return key

    def taken_at(self, key: int) -> float | None:
        """When the worker read the batch sent as ``key``, None if it has not (or
        no slot tells). The worker stores the time before the key."""
        if self.acked() != key:
            return None
        assert self.slot is not None
        taken: float = wire.TIME.unpack_from(self.slot, wire.ACK_TIME_AT)[0]
        return taken

    def runnable(self) -> bool:
        """Its main thread runs or waits for a CPU (Linux: state R in /proc); a
        stopped, sleeping or blocked one is not, nor one that cannot be looked at."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as stat:
                return stat.read().rsplit(b")", 1)[1].split()[0] == b"R"
        except (OSError, IndexError):
            return False

    def booted(self) -> float | None:
        """When the worker had read its configuration, 0.0 if not yet (None: unknown)."""
        return None if self.slot is None else wire.TIME.unpack_from(self.slot, wire.BOOTED_AT)[0]

    def ready(self) -> bool:
        """Its init has returned (True when unknown: no slot to tell)."""
        return self.slot is None or wire.TIME.unpack_from(self.slot, wire.READY_AT)[0] > 0

    def read_slot(self) -> tuple[int, int, float] | None:
        """(batch key, item offset, start time) the worker last wrote, or None.

        The worker writes it without a lock, as a seqlock (see :mod:`wire`): a
        read that races a write is discarded, and None ("nothing known") is safe:
        the caller then assumes the item has not started.
        """
        slot = self.slot
        if slot is None:
            return None
        for _ in range(3):
            (gen,) = wire.GEN.unpack_from(slot, 0)
            if gen & 1:
                continue
            seen: tuple[int, int, float] = wire.RUNNING.unpack_from(slot, wire.GEN.size)
            if wire.GEN.unpack_from(slot, 0)[0] == gen:
                return seen
        return None

    def send(
        self,
        key: int,
        fn_id: int,
        fn_blob: bytes,
        star: bool,
        track: bool,
        oob: tuple[str, list[tuple[int, int]]] | None,
        body: bytes,
        fn_limit: int,
        time_items: bool = False,
    ) -> bool | None:
        """Frame one task and write what the pipe takes now (never blocks).

        True: all written; False: the rest waits in ``out`` for :meth:`flush`;
        None: the pipe is broken (the worker is gone). The function's pickle goes
        only the first time this worker sees it.
        """
        blob = None
        reset = False
        if fn_id not in self.known:
            if len(self.known) >= fn_limit:
                self.known.clear()
                reset = True
            self.known.add(fn_id)
            blob = fn_blob
        head = pickle.dumps((key, fn_id, blob, reset, star, track, oob, time_items), 5)
        prefix = wire.HEADER.pack(_HEAD.size + len(head) + len(body)) + _HEAD.pack(len(head))
        prefix += head
        buffers: list[bytes | memoryview] = [prefix + body] if len(body) < 65536 else [prefix, body]
        if blob is not None and getattr(blob, "shipments", None):
            buffers[:0] = self._shipments(blob.shipments)  # type: ignore[attr-defined]
        if self.out:
            self.out.extend(memoryview(b) for b in buffers)
            return False
        try:
            written = os.writev(self.task_fd, buffers)
        except BlockingIOError:
            written = 0
        except OSError:
            return None
        for buf in buffers:
            if written >= len(buf):
                written -= len(buf)
                continue
            self.out.append(memoryview(buf)[written:])
            written = 0
        return not self.out

    def _shipments(self, shipments: Iterable[Shipment]) -> list[bytes | memoryview]:
        """Frames of the large globals (see ``_bigglobals``) that a function about
        to be sent names and this worker lacks: written from the objects' memory."""
        buffers: list[bytes | memoryview] = []
        for shipment in shipments:
            if self.globals.get(shipment.key) == shipment.gid:
                continue
            self.globals[shipment.key] = shipment.gid
            head, parts = shipment.frame_parts()
            head_bytes = pickle.dumps(head, 5)
            size = _HEAD.size + len(head_bytes) + sum(memoryview(p).nbytes for p in parts)
            buffers.append(wire.HEADER.pack(size) + _HEAD.pack(len(head_bytes)) + head_bytes)
            buffers.extend(parts)
        return buffers

    def flush(self) -> None:
        """Write what waits in ``out`` as far as the pipe takes it."""
        try:
            while self.out:
                view = self.out[0]
                n = os.write(self.task_fd, view)
                if n < len(view):
                    self.out[0] = view[n:]
                    return
                self.out.popleft()
        except BlockingIOError:
            return
        except OSError:
            self.out.clear()  # the worker is gone; its EOF tells the poller
            self.dead = True


def close_fd(fd: int) -> None:
    _launch.ENGINE_FDS.discard(fd)
    try:
        os.close(fd)
    except OSError:
        pass


@dataclass(frozen=True)
class WorkerSpec:
    """How to start a worker: the same for every worker of a pool, and its
    replacements."""

    start_method: str
    init: Inheritance | None = None  # the pool's init, init_args and exit
    max_tasks: int | None = None
    max_memory: int | None = None
    blas_threads: int | None = None  # threads each BLAS/OpenMP library may use
    shared: Shared | None = None  # Pool(shared=...), pickled
    # Environment additions per worker slot (a replacement gets its slot's): the
    # backend decides them (a GPU each), the engine only sets them. Empty: none.
    slot_env: tuple[Mapping[str, str], ...] = ()

    def env(self, index: int) -> Mapping[str, str]:
        """What worker slot ``index`` adds to its environment."""
        return self.slot_env[index] if self.slot_env else {}


def start_worker(spec: WorkerSpec, index: int) -> WorkerHandle:
    """Create the pipes and the slot, start the process of worker slot ``index``,
    send it its configuration."""
    task_r, task_w = os.pipe()
    result_r, result_w = os.pipe()
    slot_fd = _slot_file()
    _launch.ENGINE_FDS.update((task_r, task_w, result_r, result_w, slot_fd))
    try:
        slot = mmap.mmap(slot_fd, wire.SLOT_SIZE)
        wire.enlarge_pipe(task_w)
        wire.enlarge_pipe(result_w)
        proc = _launch.launch(
            spec.start_method,
            task_r,
            result_w,
            slot_fd,
            spec.blas_threads,
            spec.init,
            spec.env(index),
        )
    except BaseException:
        close_fd(task_w)
        close_fd(result_r)
        raise
    finally:
        # The child has its own copies; ours would hide its death (no EOF).
        close_fd(task_r)
        close_fd(result_w)
        close_fd(slot_fd)  # the mapping stays valid without the descriptor
    settings = (
        wire.CONFIG,
        None if spec.init is None else spec.init.blob,
        spec.max_tasks,
        spec.max_memory,
        spec.blas_threads,
        spec.shared,
        _authkey(),
        os.getpid(),  # whose segments a worker removes if this process dies
    )
    config = pickle.dumps(settings, 5)
    # The pipe is empty and large: this first small write never blocks.
    wire.write_all(task_w, wire.frame(config))
    os.set_blocking(task_w, False)
    os.set_blocking(result_r, False)
    return WorkerHandle(proc, task_w, result_r, slot=slot)


def _authkey() -> bytes:
    """This process's multiprocessing authentication key, for the worker to take
    as its own: a ``multiprocessing.Manager()`` proxy passed to a task connects to
    its manager with it (a spawned or fork-server worker has a random one)."""
    from multiprocessing import current_process

    return bytes(current_process().authkey)


def stop_workers(workers: list[WorkerHandle], grace: float) -> None:
    """Send STOP and close the task pipes; kill whoever is still up ``grace``
    seconds later (one deadline for all, not ``grace`` each)."""
    for w in workers:
        if not w.out:  # never in the middle of a frame; STOP fits any pipe at once
            try:
                os.write(w.task_fd, wire.STOP)
            except OSError:
                pass  # full or gone: the worker then sees a bare end of file
        close_fd(w.task_fd)
    deadline = time.monotonic() + grace
    for w in workers:
        if w.proc.wait(max(0.0, deadline - time.monotonic())) is None:
            w.proc.kill()
            w.proc.wait(grace)
        close_fd(w.result_fd)
        w.close_slot()


@dataclass
class Decoded:
    """A result frame, decoded: the outcome, or the init error of a worker."""

    outcome: BatchResult | BaseException | None
    init_error: BaseException | None = None
    retire: bool = False  # a RETIRE message: the worker exits now
    kept: bool = False  # the task kept arrays of its argument segment


def _load_big(message: tuple[int, str, list[tuple[int, int]], bytes]) -> Any:
    """A result whose large buffers wait in a worker's segment: map it, remove its
    name at once (the mapping lives on with the arrays), rebuild on top of it."""
    _, name, spans, data = message
    segment = shmem.Segment.attach(name)
    segment.unlink()
    try:
        return pickle.loads(data, buffers=shmem.views(segment, spans))
    finally:
        segment.close()


def decode_result(payload: bytes | bytearray) -> Decoded:
    """A worker's frame, decoded; never raises: an outcome that will not load
    here becomes a SerializationError for its batch (the engine must always be
    able to hand the in-flight task an outcome, or the task and the next call
    on the pool would wait forever)."""
    try:
        return _decode(payload)
    except BaseException as exc:  # the user's code ran in the loads: even SystemExit
        if ctrl_c(exc, lambda: _decode(payload)):
            raise
        err = SerializationError(
            f"a result could not be unpickled in the parent: {exc!r}. Is the class of "
            "the returned object importable here?"
        )
        set_cause(err, exc)
        return Decoded(err, kept=True)  # what the worker kept is unknown: assume it did


def _decode(payload: bytes | bytearray) -> Decoded:
    message = pickle.loads(payload)
    if message[0] == wire.RESULT_OOB:
        message = _load_big(message)
    if message[0] == wire.INIT_FAILED:
        from manycore._core import PoolBroken  # (loaded when raised: see _core._broken)

        return Decoded(PoolBroken("init failed"), rebuild(message[1]))
    if message[0] == wire.RETIRE:
        return Decoded(None, retire=True)
    _, _key, values, failures, elapsed, unrun, kept, slowest, moved = message
    if values is None:  # the worker could not load the batch's arguments
        return Decoded(rebuild(failures), kept=kept)
    errors = {i: rebuild(e) for i, e in failures.items()} if failures else None
    return Decoded(BatchResult(values, errors, elapsed, unrun, slowest, moved), kept=kept)


def crash_error(
    batch: Batch, pid: int, exitcode: int | None, offset: int | None = None
) -> WorkerCrashed:
    """The error of a worker that died; ``offset``: the item it ran, when known."""
    if offset is None and len(batch) == 1:
        offset = 0
    if offset is not None:
        what = batch.name_item(offset)
    else:
        what = f"one of input items {batch.start}..{batch.start + len(batch) - 1}"
    from manycore._core import WorkerCrashed  # (loaded when raised: see _core._broken)

    return WorkerCrashed(
        f"worker process {pid} died ({describe_exit(exitcode)}) while running {what}. "
        "If it ran out of memory, use fewer workers or smaller inputs; if a C extension "
        "crashed, try the function alone on that input.",
        exitcode=exitcode,
        index=None if offset is None else batch.start + offset,
    )


# Where a timed-out batch was when its time ran out (see _faults.overdue).
_NOT_STARTED = {
    "loading": "{what} was still loading its arguments {limit} after worker process {pid} read it",
    "unread": "worker process {pid} had not read {what} from its pipe {limit} after it was "
    "handed over (stopped or frozen?)",
    "init": "{what} waited {limit} for worker process {pid}, whose init had not returned",
    "boot": "{what} waited {limit} (and the time a worker may take to start) for worker "
    "process {pid}, which had not started (stopped or frozen?)",
}


def timeout_error(batch: Batch, offset: int, pid: int, phase: str = "running") -> TaskTimeout:
    assert batch.timeout is not None
    index = batch.start + offset
    what, limit = batch.name_item(offset), f"timeout={batch.timeout:g} s"
    if phase not in _NOT_STARTED:
        then = f"its worker process {pid} was killed to stop it and has been replaced"
        return timed_out(what, batch.timeout, index, then)
    where = _NOT_STARTED[phase].format(what=what, limit=limit, pid=pid)
    message = f"{where}; the worker was killed and has been replaced"
    return TaskTimeout(message, timeout=batch.timeout, index=index)
