"""Functions for the checkpoint tests: importable in workers under every start
method, and the same code in the test process and in the subprocesses it runs.

``log`` functions append the input to a file, one line per call (``O_APPEND``
writes of one short line are atomic): the test then knows which items were
computed, and how many times, whatever process or thread computed them.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any


def _append(log: str, x: Any) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)


def logged_square(x: int, log: str, delay: float = 0.0) -> int:
    _append(log, x)
    if delay:
        time.sleep(delay)
    return x * x


async def async_logged_square(x: int, log: str) -> int:
    _append(log, x)
    return x * x


def fails_on_3s(x: int, log: str) -> int:
    """Fails for 3, 8, 13, ..."""
    _append(log, x)
    if x % 5 == 3:
        raise ValueError(f"bad input {x}")
    return x * 10


def fails_once(x: int, log: str, marks: str) -> int:
    """Fails for 3, 8, 13, ... the first time each is computed (a transient error)."""
    _append(log, x)
    mark = os.path.join(marks, str(x))
    if x % 5 == 3 and not os.path.exists(mark):
        open(mark, "w").close()
        raise ValueError(f"transient failure of {x}")
    return x * 10


def lock_on_2(x: int) -> Any:
    """A value that no pickler stores, for input 2."""
    return threading.Lock() if x == 2 else x


def power(base: int, exp: int) -> int:
    return int(base**exp)


def logged_calls(log: str) -> list[int]:
    """The inputs computed so far, one per call, in the order of the calls."""
    try:
        with open(log) as f:
            return [int(line) for line in f]
    except FileNotFoundError:
        return []


def in_set(x: str) -> bool:
    # A frozenset constant: its order changes with string hash randomisation.
    return x in {"alpha", "beta", "gamma", "delta"}
