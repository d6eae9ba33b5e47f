"""The errors that are also ``concurrent.futures``' broken-pool errors.

They live apart from :mod:`manycore._core._errors` because their standard library
bases are expensive to import: ``BrokenProcessPool`` is defined in
``concurrent.futures.process``, which loads multiprocessing, its connections,
``tempfile``, ``subprocess`` and ``logging`` (~10-15 ms). Only the parent raises
these; a worker process, whose start-up is paid per worker under ``spawn``, never
imports this module.
"""

from __future__ import annotations

from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool

from manycore._core._errors import ManycoreError, _rebuild_crash
from manycore._core._public import public

__all__ = ["PoolBroken", "WorkerCrashed", "init_raised"]


# The standard library's "broken" errors are bases too: code written for
# concurrent.futures (``except BrokenExecutor``) catches manycore's as well.
@public
class PoolBroken(ManycoreError, BrokenExecutor):
    """The pool cannot run tasks: a worker's ``init`` raised (chained as ``__cause__``).
    Also a ``concurrent.futures.BrokenExecutor`` (so a ``RuntimeError``)."""


@public
class WorkerCrashed(ManycoreError, BrokenProcessPool):
    """A worker process died while it ran an item (segfault, ``os._exit``, a kill).
    Also a ``concurrent.futures.process.BrokenProcessPool`` (a ``BrokenExecutor``,
    so a ``RuntimeError``): only that item failed, and the worker was replaced."""

    def __init__(self, message: str, *, exitcode: int | None = None, index: int | None = None):
        super().__init__(message)
        self.exitcode = exitcode
        self.index = index
        self.worker_slot: int | None = None  # the slot of the worker that died (stats)

    def __reduce__(self) -> tuple[object, ...]:
        # The rebuilder stays in _errors: pickles (checkpoints) written before
        # this class moved here name it there.
        return (_rebuild_crash, (str(self), self.exitcode, self.index))


def init_raised(error: BaseException, whose: str = "a worker's") -> PoolBroken:
    """The pool's ``init`` raised ``error`` (its ``__cause__``): it runs nothing more."""
    err = PoolBroken(f"{whose} init function raised {error!r}; the pool is broken")
    err.__cause__ = error
    return err
