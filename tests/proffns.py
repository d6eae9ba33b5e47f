"""Functions for tests/test_profile.py: importable, so that spawned workers find them.

Each stands for one kind of work: waiting (sleep, like I/O), computing in pure
Python (holds the GIL), and work too small to be worth handing to a worker.
"""

from __future__ import annotations

import asyncio
import time


def wait(x: int, seconds: float = 0.01) -> int:
    """Sleep-bound: the GIL is released while it waits."""
    time.sleep(seconds)
    return x


def spin(x: int, seconds: float = 0.005) -> int:
    """CPU-bound pure Python for about ``seconds`` of CPU time: holds the GIL."""
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return x


def add1(x: int) -> int:
    """Trivially cheap."""
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def fail_on_3(x: int) -> int:
    if x == 3:
        raise ValueError("bad item 3")
    return x * 10


async def await_wait(x: int, seconds: float = 0.01) -> int:
    await asyncio.sleep(seconds)
    return x


def wait_or_fail(x: int, bad: int = 40) -> int:
    """Sleep-bound, and fails on one item (far enough in to run after the sample)."""
    time.sleep(0.01)
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def late_first(x: int) -> int:
    """Item 0 outlasts a 0.3 s timeout in the sample; the others wait 10 ms."""
    time.sleep(0.6 if x == 0 else 0.01)
    return x


def hang_at_100(x: int) -> int:
    """Cheap, except item 100, which outlasts any timeout a test gives."""
    if x == 100:
        time.sleep(5)
    return x


def always_hangs(x: int) -> int:
    time.sleep(5)
    return x


def sort_floats(x: int, size: int = 3_000_000) -> int:
    """NumPy sorting a 24 MB array (about 25 ms: NumPy 2.x sorts with SIMD, and 2.4 MB
    took 2 ms, so all 24 items ran inside the 0.2 s sample): compiled code that
    releases the GIL."""
    import numpy as np

    data = np.random.default_rng(x).random(size)
    data.sort()
    return x
