"""Task functions for the Ray service suite (importable by the Ray workers, which
the head starts with ``tests/`` on their path)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


class Custom(Exception):
    """An exception type of the tests' own: it must come back as itself."""


def square(x: int) -> int:
    return x * x


def hang_on(x: int, hang: tuple[int, ...] = (3, 11)) -> int:
    """Sleeps for an hour on the items in ``hang``."""
    if x in hang:
        time.sleep(3600)
    return x


def die_on(x: int, victim: int = 5) -> int:
    """Kills its own worker process on ``victim``."""
    if x == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def raise_on(x: int) -> int:
    if x == 4:
        raise Custom(f"item {x}")
    return x


def fail_first(path: str) -> str:
    """Fails the first time it runs for ``path`` (a file keeps count)."""
    marker = Path(path)
    if not marker.exists():
        marker.write_text("ran")
        raise ConnectionError("first try fails")
    return "second try"
