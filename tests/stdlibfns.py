"""Task functions for tests/test_stdlib_objects.py and tests/test_nesting.py:
importable in workers under every start method."""

from __future__ import annotations

from typing import Any


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
