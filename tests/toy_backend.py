"""A backend of the tests' own, outside manycore: each batch runs on a thread of
a ``concurrent.futures`` executor. It proves that a backend is one file."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import manycore as mc
from manycore.backends import Backend, BackendOptions, Batch, BatchResult, Done, run_batch


class ToyBackend(Backend):
    name = "toy"
    one_item_when_timed = True  # a timed batch holds one item: its thread is timed
    numbered_workers = False  # results name their thread

    @classmethod
    def default_workers(cls) -> int:
        return 3

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        self._pool = ThreadPoolExecutor(options.workers, thread_name_prefix="toy")
        self._queued: dict[int, Future[None]] = {}

    def submit(self, batch: Batch, done: Done) -> None:
        if self.options.init is not None or self.options.exit is not None:
            raise ValueError("the toy backend runs no init= or exit=")
        self._queued[id(batch)] = self._pool.submit(self._run, batch, done)

    def _run(self, batch: Batch, done: Done) -> None:
        self._queued.pop(id(batch), None)
        if batch.claim is not None and not batch.claim():
            return
        if batch.timeout is None:
            result = run_batch(
                batch.fn, batch.items, batch.star, batch.kwargs, Exception, batch.time_items
            )
        else:
            result = _run_timed(batch, batch.timeout)
        result.worker = threading.current_thread().name
        done(batch, result)

    def cancel(self, batch: Batch) -> bool:
        queued = self._queued.pop(id(batch), None)
        return queued is not None and queued.cancel()

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_pending)


def _run_timed(batch: Batch, timeout: float) -> BatchResult:
    """One item on a thread of its own, waited for ``timeout`` seconds: past that it
    fails (the thread runs on, abandoned, as on the threads backend)."""
    box: list[BatchResult] = []
    args = (batch.fn, batch.items, batch.star, batch.kwargs, Exception)
    thread = threading.Thread(target=lambda: box.append(run_batch(*args)), daemon=True)
    thread.start()
    thread.join(timeout)
    if box:
        return box[0]
    late = mc.TaskTimeout(
        f"{batch.name_item(0)} took longer than timeout={timeout:g} s",
        timeout=timeout,
        index=batch.start,
    )
    return BatchResult([None] * len(batch), {0: late}, timeout)


def register() -> None:
    mc.register_backend(ToyBackend)
