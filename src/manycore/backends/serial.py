"""``backend="serial"``: runs every batch inline, in the caller's thread.

For debugging (a plain traceback, a debugger that stops in the function) and for
measuring what parallelism buys.
"""

from __future__ import annotations

import threading

from .._batch import Batch, run_batch
from .._errors import PoolBroken, PoolClosed
from ._base import Backend, BackendOptions, Done, register_backend

__all__ = ["SerialBackend"]


@register_backend
class SerialBackend(Backend):
    name = "serial"
    concurrent = False

    def __init__(self, options: BackendOptions):
        super().__init__(options)
        self._closed = False
        self._lock = threading.Lock()  # init runs once, even with several callers
        self._initialised = options.init is None
        self._init_error: BaseException | None = None

    def submit(self, batch: Batch, done: Done) -> None:
        if self._closed:
            raise PoolClosed("the pool has been shut down and accepts no new work")
        if not self._initialised:
            self._initialise()
        if batch.claim is not None and not batch.claim():
            return
        # KeyboardInterrupt is the user's Ctrl-C here, not a task failing: let it go.
        done(batch, run_batch(batch.fn, batch.items, batch.star, batch.kwargs, Exception))

    def _initialise(self) -> None:
        with self._lock:
            if self._init_error is None and not self._initialised:
                init = self.options.init
                assert init is not None
                try:
                    init(*self.options.init_args)
                except Exception as exc:
                    self._init_error = exc
                self._initialised = self._init_error is None
            if self._init_error is not None:
                err = PoolBroken(
                    f"the init function raised {self._init_error!r}; the pool is broken"
                )
                raise err from self._init_error

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        self._closed = True
