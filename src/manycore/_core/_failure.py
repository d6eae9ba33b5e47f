"""``Failure``: what stands in a failed item's place with ``on_error="collect"``."""

from __future__ import annotations

import traceback as _traceback
from dataclasses import dataclass
from typing import Any

from manycore._core._errors import RemoteTraceback
from manycore._core._public import public

__all__ = ["ERROR_POLICIES", "Failure"]

ERROR_POLICIES = ("raise", "skip", "collect")


@public
@dataclass(frozen=True, eq=False)
class Failure:
    """An item that failed: its exception, its index in the input and the input.

    ``traceback`` is the text of the traceback where the item ran (the worker's,
    for the processes backend).
    """

    exception: BaseException
    index: int
    input: Any

    @property
    def traceback(self) -> str:
        cause = self.exception.__cause__
        if isinstance(cause, RemoteTraceback):
            return cause.tb_text
        exc = self.exception
        return "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))

    def __repr__(self) -> str:
        return f"Failure(index={self.index}, exception={self.exception!r})"
