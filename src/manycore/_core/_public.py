"""Public names carry the public module: ``manycore.TaskTimeout``, not the private
module that defines it. Tracebacks and reprs show that name, and pickle stores
that path (resolved by the lazy ``manycore.__getattr__``), so a pickled value
survives a move of the private modules (see the checkpoint reader's map of old
paths, for values pickled before this)."""

from __future__ import annotations

__all__ = ["public"]

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")


def public(obj: T) -> T:
    """Decorator of a class or function listed in ``manycore.__all__``."""
    obj.__module__ = "manycore"
    return obj
