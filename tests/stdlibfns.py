"""Task functions for tests/test_stdlib_objects.py and tests/test_nesting.py:
importable in workers under every start method."""

from __future__ import annotations

import os
from typing import Any

import manycore as mc


def store_square(shared: Any, key: int) -> int:
    """Write into a multiprocessing.Manager() proxy (a dict)."""
    shared[key] = key * key
    return key


def send_one(conn: Any) -> int:
    conn.send(1)
    return 1


def make_pipe_end(_: Any) -> Any:
    import multiprocessing

    return multiprocessing.Pipe()[0]


def nested_map(n: int) -> tuple[list[int], int]:
    """A map inside a task: its results and the processes this worker started for it."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    out = mc.map(abs, range(-n, 0))
    started = {p.pid for p in me.children(recursive=True)} - before
    return out, len(started)


def nested_pool_sizes(_: Any) -> tuple[int, int | None, list[int]]:
    """A Pool() made inside a task: its workers and BLAS threads (and that it runs)."""
    with mc.Pool(start_method="fork") as pool:
        return pool.workers, pool._options.blas_threads, pool.map(abs, [-1, -2])


def worker_pid(_: Any) -> int:
    return os.getpid()


_log: Any = None  # a worker's multiprocessing queue, from init_args


def log_init(log: Any) -> None:
    global _log
    _log = log
    log.put(f"init {os.getpid()}")


def flush_log_and_exit(code: int) -> None:
    """Ends its worker once the log's feeder thread has written everything and let
    go of the queue's write lock (a worker ended while the feeder holds it leaves
    the lock held for good: multiprocessing's own limit, docs/errors.md)."""
    _log.close()
    _log.join_thread()
    os._exit(code)


def log_task(x: int) -> int:
    _log.put(f"task {x}")
    return x


def log_exit() -> None:
    _log.put(f"exit {os.getpid()}")


def signal_init(event: Any, value: Any, conn: Any) -> None:
    """Use a multiprocessing Event, Value and Pipe end given in init_args."""
    with value.get_lock():
        value.value += 1
    conn.send(os.getpid())
    event.set()


def nested_timed_map(seconds: float) -> tuple[str, float]:
    """A map with a timeout inside a task, of an item that overstays it: the
    error's type and how long the map took."""
    import time

    began = time.monotonic()
    try:
        mc.map(time.sleep, [seconds], timeout=0.5)
    except Exception as exc:
        return type(exc).__name__, time.monotonic() - began
    return "no error", time.monotonic() - began


class Box:
    """A result that can be watched with a weak reference in the parent."""

    def __init__(self, value: int):
        self.value = value


def box_after_a_first_failure(marker: str, value: int, stall: float) -> Box:
    """Fails (``stall`` == 0) or stalls (> 0) the first time it runs for ``marker``
    (a file path, so the first try is known in any worker), then returns a Box."""
    import time

    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return Box(value)
    if stall:
        time.sleep(stall)
    raise ValueError("first try fails")


def mark_after(path: str, seconds: float) -> None:
    """An exit() that takes a while (saving a model, flushing a log)."""
    import time

    time.sleep(seconds)
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))


def put_large(args: tuple[Any, int]) -> int:
    """Put an item too big for one record of a mc.Queue (it goes in a segment)."""
    q, i = args
    q.put((i, bytes(100_000)))
    return i
