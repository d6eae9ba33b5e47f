"""Task and init functions for the hand-off fault tests (importable in workers)."""

from __future__ import annotations

import os
import time
from typing import Any


def block_forever(seconds: float = 60.0) -> int:
    time.sleep(seconds)
    return 0


class SlowToLoad:
    """An argument whose unpickling blocks in the worker (not in the parent,
    which only pickles it)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (block_forever, (60.0,))


def init_that_hangs() -> None:
    time.sleep(60)


def init_that_exits() -> None:
    os._exit(4)


def times_ten(x: Any) -> Any:
    return x * 10 if isinstance(x, int) else x


def nap_then(x: int, seconds: float = 30.0) -> int:
    time.sleep(seconds)
    return x


class ExitOnLoad:
    """Ends the process that unpickles it (a worker loading ``shared=``)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (3,))
