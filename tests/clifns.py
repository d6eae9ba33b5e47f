"""Functions for ``manycore run`` in tests/test_cli_run.py (importable, so that the
command's worker processes find them: the tests run it with this folder as cwd)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any


def square(x: Any) -> Any:
    return x * x


def shout(text: str) -> str:
    return text.upper() + "!"


def add(a: int, b: int) -> int:
    return a + b


def fails_on(x: int) -> int:
    """``x`` back, except for 3: a ValueError."""
    if x == 3:
        raise ValueError(f"no {x}")
    return x


def describe(value: Any) -> str:
    """What arrived: its type and value (to check how inputs are parsed)."""
    return f"{type(value).__name__} {value!r}"


def odd_result(x: Any) -> Any:
    """A result JSON cannot hold as it is."""
    return {1, 2} if x == "set" else complex(x)


async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


class Scaler:
    @staticmethod
    def triple(x: int) -> int:
        return 3 * x


NOT_A_FUNCTION = 42


def nap(seconds: Any) -> Any:
    """Sleep ``seconds``, then give them back."""
    time.sleep(float(seconds))
    return seconds


def logged(x: Any) -> Any:
    """``x`` back, after appending it to the file named by $CLIFNS_LOG; without
    $CLIFNS_FIXED, 3 fails (a bug fixed before the rerun, in the checkpoint tests)."""
    if x == 3 and not os.environ.get("CLIFNS_FIXED"):
        raise ValueError("no 3 until fixed")
    with open(os.environ["CLIFNS_LOG"], "a") as log:
        log.write(f"{x}\n")
    return x
