"""Task functions for tests/test_stdlib_objects.py and tests/test_nesting.py:
importable in workers under every start method."""

from __future__ import annotations

import os
from typing import Any

import manycore as mc


def store_square(shared: Any, key: int) -> int:
    """Write into a multiprocessing.Manager() proxy (a dict)."""
    shared[key] = key * key
    return key
