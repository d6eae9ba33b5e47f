"""Task, init and argument helpers for the adversarial engine tests (importable in workers)."""

from __future__ import annotations

import os
import time
from typing import Any


class BigExitOnLoad:
    """Stands for a large global (``nbytes`` says 8 MB) whose unpickling ends the
    worker that loads it."""

    nbytes = 8 << 20

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (5,))


def exit_now(x: int) -> int:
    os._exit(9)


def slow_exit() -> None:
    time.sleep(60)


def add_one(x: int) -> int:
    return x + 1


def no_op() -> None:
    return None


def refuse_to_load() -> Any:
    raise ValueError("this function will not load here")


class FailsToLoadFn:
    """A callable whose unpickling raises in the worker."""

    def __call__(self, x: int) -> int:
        return x

    def __reduce__(self) -> tuple[Any, ...]:
        return (refuse_to_load, ())


class ArgFailsToLoad:
    def __reduce__(self) -> tuple[Any, ...]:
        return (refuse_to_load, ())
