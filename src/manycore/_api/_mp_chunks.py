"""What a worker runs for one chunk of a ``manycore.multiprocessing.Pool`` map: a
module of its own, with no imports, so that a worker loads nothing else for it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_chunk"]


def run_chunk(fn: Callable[..., Any], star: bool, chunk: Sequence[Any]) -> list[Any]:
    """``multiprocessing.pool``'s ``mapstar``/``starmapstar``: one chunk's values."""
    if star:
        return [fn(*args) for args in chunk]
    return [fn(item) for item in chunk]
