"""How a task's exception crosses the process boundary and is rebuilt.

In the worker an exception becomes a small tuple ``(blob, type_name, message,
traceback_text)``; ``blob`` is the pickled exception when it survives a round trip,
else ``None``. In the parent :func:`rebuild` gives back the original type where it
can, a :class:`RemoteError` where it cannot, with the traceback text as ``__cause__``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

from manycore._core._errors import RemoteError, RemoteTraceback, add_note, set_cause, set_traceback

__all__ = ["ErrorWire", "pack_exception", "rebuild", "tag_with_index"]

ErrorWire = tuple[bytes | None, str, str, str]
_MAX_MESSAGE = 100_000


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:  # user code: even SystemExit must not end the worker
        text = f"<str() of the exception failed: {type(exc).__name__}>"
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + f"... [{len(text) - _MAX_MESSAGE} characters cut]"
    return text


def pack_exception(exc: BaseException) -> ErrorWire:
    """Turn ``exc`` into something that always pickles; never raises.

    Pickling runs the user's ``__reduce__``, and formatting the traceback their
    ``__str__``: whatever those raise (``SystemExit`` included) only costs the
    blob (the parent then gets a :class:`RemoteError`) or the text."""
    tb_text = _traceback_text(exc)
    blob: bytes | None
    try:
        blob = pickle.dumps(exc, 5)
        # Some exceptions pickle but cannot be rebuilt (an __init__ with other
        # arguments than .args); find out here rather than in the parent.
        pickle.loads(blob)
        if len(blob) > 4 * _MAX_MESSAGE:
            blob = None
    except BaseException:
        blob = None
    return (blob, _type_name(exc), _message(exc), tb_text)


def _traceback_text(exc: BaseException) -> str:
    # (Imported here: every worker imports this module, most never format a
    # traceback, and traceback with linecache and tokenize costs ~2 ms.)
    import traceback

    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:
        lines = traceback.format_tb(exc.__traceback__)
        return "".join(["Traceback (most recent call last):\n", *lines, _type_name(exc), "\n"])


def rebuild(wire: ErrorWire, loads: Callable[[bytes], object] = pickle.loads) -> BaseException:
    """The parent-side exception for a packed one, with the remote traceback.

    Never raises: an exception that will not load here, or will not take the
    traceback as its ``__cause__``, arrives as a :class:`RemoteError` with the
    same type name, message and traceback text."""
    blob, type_name, message, tb_text = wire
    exc: object = None
    if blob is not None:
        try:
            exc = loads(blob)
        except BaseException:  # the user's code ran here; none of it may escape
            exc = None
    if isinstance(exc, BaseException):
        # A traceback pickled with it (tblib's pickling, which importing
        # dask.distributed installs for every exception class) would hold
        # frames of its own here; the text below is the traceback.
        set_traceback(exc, None)
    if not isinstance(exc, BaseException) or not set_cause(exc, RemoteTraceback(tb_text)):
        exc = RemoteError(type_name, message)
        set_cause(exc, RemoteTraceback(tb_text))
    return exc


def tag_with_index(exc: BaseException, index: int | None) -> BaseException:
    """Add a note naming the input that failed (once)."""
    if index is not None:
        note = f"manycore: raised while processing input item {index}"
        try:
            notes = getattr(exc, "__notes__", None)
            fresh = not notes or note not in notes
        except Exception:  # a class's own __getattr__ or __eq__ failed
            fresh = True
        if fresh:
            add_note(exc, note)
    return exc
