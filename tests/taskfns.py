"""Task functions for tests/test_tasks.py (importable, so that spawned workers find them)."""

from __future__ import annotations

import os
import time
from typing import Any

import manycore as mc


def load(n: int) -> list[int]:
    return list(range(n))


def double(xs: list[int]) -> list[int]:
    return [2 * x for x in xs]


def add(a: int, b: int) -> int:
    return a + b


def total(*parts: Any) -> int:
    return sum(sum(p) if isinstance(p, list) else p for p in parts)


def square(x: int) -> int:
    return x * x


def merge_all(items: list[int], extra: dict[str, Any]) -> int:
    return sum(items) + sum(extra["more"]) + extra["one"]


def fail(message: str) -> None:
    raise ValueError(message)


def slow(x: int, seconds: float = 0.5) -> int:
    time.sleep(seconds)
    return x


def record(path: str, value: int) -> int:
    """Append ``value`` to a file (proof that the task ran, from any process)."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


def flaky(path: str, failures: int) -> int:
    """Fails ``failures`` times (counted in a file), then returns the attempt number."""
    with open(path, "a+") as f:
        f.seek(0)
        attempt = len(f.read().splitlines()) + 1
        f.write("x\n")
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


def fan_in(n: int) -> int:
    """A task that calls tasks: n inner squares, waited for here."""
    inner = [square_task(i) for i in range(n)]
    return sum(f.result(timeout=30) for f in inner)


def fan_in_waiting(n: int) -> int:
    inner = [square_task(i) for i in range(n)]
    _, not_done = mc.wait(inner, timeout=30)
    assert not not_done
    return sum(f.result() for f in inner)


def where(_: Any = None) -> int:
    return os.getpid()


square_task = mc.task(square)


@mc.task(retries=1, name="sum of parts")
def summed(*parts: Any) -> int:
    return total(*parts)


def thread_name(_: Any = None) -> str:
    import threading

    return threading.current_thread().name


def inner_thread_names(n: int) -> list[str]:
    """Names of the threads that ran ``n`` task calls made by this task."""
    inner = [mc.task(thread_name)(i) for i in range(n)]
    return [f.result(timeout=30) for f in inner]


def chain_inside(n: int) -> int:
    """A task that builds a chain of n nested calls and waits for its end."""
    f = square_task(0)
    add = mc.task(lambda a, b: a + b, name="add")
    for _ in range(n):
        f = add(f, 1)
    return f.result(timeout=60)


def first_of(n: int) -> int:
    """Waits for the first of n nested calls (FIRST_COMPLETED)."""
    inner = [square_task(i) for i in range(n)]
    done, _ = mc.wait(inner, timeout=30, return_when="FIRST_COMPLETED")
    return len(done)


def pids_of_nested(n: int, pool: Any) -> set[int]:
    """A task (on threads) waiting for n calls on another pool (processes)."""
    inner = [mc.task(where, pool=pool)(i) for i in range(n)]
    return {f.result(timeout=60) for f in inner}


def wait_with_timeout(seconds: float) -> str:
    """A task waiting, with a timeout, for a nested task that takes longer."""
    slow_one = mc.task(slow)(1, 1.0)
    try:
        slow_one.result(timeout=seconds)
    except TimeoutError:
        return "timed out"
    return "finished"
