"""Functions for tests/test_cluster.py (importable by cluster workers)."""

from __future__ import annotations

import collections
import os
import time
from typing import Any

import manycore as mc
from taskfns import flaky as flaky  # shared with the task tests


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def scaled_sum(arr: Any, factor: int) -> float:
    return float(arr.sum()) * factor


def load_state(value: int) -> dict[str, int]:
    return {"value": value, "pid": os.getpid()}


def state_value(_: Any) -> int:
    return int(mc.worker_state()["value"])


def shared_sum(_: Any) -> float:
    return float(mc.shared().sum())


def make_big(n: int) -> Any:
    import numpy as np

    return np.full(n, 2.0)


def total(arr: Any, extra: float = 0.0) -> float:
    return float(arr.sum()) + extra


def kind_of(x: Any) -> str:
    return type(x).__name__


def bad_init() -> None:
    raise RuntimeError("no model here")


def first_of(arr: Any) -> float:
    return float(arr[0])


def shared_len(_: Any) -> int:
    return len(mc.shared())


def count_up(counter: Any, times: int) -> int:
    for _ in range(times):
        counter.increment()
    return times


def locked_add(args: tuple[Any, Any]) -> int:
    """Read-modify-write of a Value under its lock: no lost update."""
    value, lock = args
    with lock:
        current = value.value
        time.sleep(0.001)
        value.value = current + 1
    return 1


def limited(args: tuple[Any, Any, Any]) -> int:
    """Holds a semaphore slot while the counter says how many hold one."""
    sem, inside, peak = args
    with sem:
        now = inside.increment()
        if now > peak.value:
            peak.value = now  # a rough peak: good enough to see more than 2
        time.sleep(0.05)
        inside.increment(-1)
    return 1


def produce(args: tuple[Any, int]) -> int:
    queue, n = args
    for i in range(n):
        queue.put(i)
    return n


Point = collections.namedtuple("Point", "x y")


def hang_on(x: int, hang: tuple[int, ...] = (3, 11)) -> int:
    """Item ``x`` in ``hang`` sleeps for an hour; the others return at once."""
    time.sleep(3600 if x in hang else 0.05)
    return x


def nested_calls(n: int) -> tuple[list[int], list[int], int]:
    """A task that calls tasks: an untimed and a timed map inside it, and a task
    (its value is n)."""
    plain = mc.map(abs, range(-n, 0))
    timed = mc.map(abs, range(-n, 0), timeout=30)
    return plain, timed, mc.task(abs)(-n).result(timeout=30)


def device_seen(seconds: float) -> tuple[str, str | None]:
    """After ``seconds``: the Dask worker that ran this, and the device it sees."""
    import distributed

    time.sleep(seconds)
    return str(distributed.get_worker().name), os.environ.get("CUDA_VISIBLE_DEVICES")
