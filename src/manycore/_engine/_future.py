"""The future the process engine hands out: its ``result()`` reads the pipes itself."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from manycore._core import AwaitableFuture

if TYPE_CHECKING:
    from manycore._engine._engine import ProcessEngine

__all__ = ["EngineFuture"]


class EngineFuture(AwaitableFuture[Any]):
    """A ``Future`` whose ``result()`` reads its own result from the pipes.

    See :mod:`manycore._engine._turns`: the waiting thread polls the engine itself when it
    can, which saves the hand-off through the I/O thread on every round trip.
    """

    def __init__(self, engine: ProcessEngine):
        super().__init__()
        self._engine = engine

    def cancel(self) -> bool:
        # A thread waiting in result() may be the one polling the engine, asleep
        # in select() until some worker event: wake it to see the cancellation.
        cancelled = super().cancel()
        if cancelled:
            self._engine.wake()
        return cancelled

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(self._wait(timeout))
        finally:
            # The error raised keeps this frame in its traceback, and the future
            # keeps the error: without this, a failed future is a cycle (as the
            # base class breaks it in its own result()).
            del self

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return super().exception(self._wait(timeout))

    def _wait(self, timeout: float | None) -> float | None:
        """Poll until done or ``timeout``; the time left, for the base class."""
        if self.done():
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        self._engine.wait_for(self, timeout)
        return None if deadline is None else max(0.0, deadline - time.monotonic())
