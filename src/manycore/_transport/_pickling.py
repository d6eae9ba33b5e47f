"""Pickling as a worker needs it: :func:`dumps` (plain ``pickle``, protocol 5, with
cloudpickle as the fallback) and :func:`loads_code`, the counterpart of
:func:`manycore._transport._serialize.dumps_code`.

Apart from :mod:`~manycore._transport._serialize` because that module subclasses
cloudpickle's pickler, and importing cloudpickle (with ``typing``, ``platform``,
``inspect``...) costs every worker several milliseconds of start-up. A worker
never needs it to *load*: a pickle made by cloudpickle names its reducers, and
``pickle`` imports cloudpickle by itself when a payload refers to them. It only
needs it to *dump* a result plain pickle cannot handle, and imports it then.
"""

from __future__ import annotations

import io
import pickle
import threading
import types
from collections.abc import Callable

from manycore._transport._bigglobals import PID as BIG_PID
from manycore._transport._bigglobals import global_value
from manycore._transport._shm import THRESHOLD

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAIN_GLOBALS",
    "PROTOCOL",
    "code_with_source",
    "ctrl_c",
    "dumps",
    "loads",
    "loads_code",
    "why",
]

PROTOCOL = 5
loads = pickle.loads
# The persistent id that stands for a worker's own ``__main__`` namespace.
MAIN_GLOBALS = "manycore:__main__.__dict__"


def dumps(obj: object, big: list[memoryview] | None = None, *, to_worker: bool = True) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle where plain pickle cannot serve.

    With ``big``, buffers of at least :data:`_shm.THRESHOLD` bytes (NumPy arrays and
    other protocol-5 buffers) are left out of the pickle and appended to ``big``,
    to travel through shared memory; ``loads(data, buffers=big)`` puts them back.
    ``to_worker=False`` (a result, on its way to the parent): references to
    ``__main__`` stay references, since the parent has that module.
    """
    data = _dumps(obj, big, to_worker)
    # A string that merely names the module costs one extra pickling, nothing more.
    if _PIPE_ENDS in data:
        _refuse_pipe_ends(obj)
    return data


# A multiprocessing Connection (a Pipe() end) pickles, by default, as its bare file
# descriptor: a number that means nothing in another process, or another file.
_PIPE_ENDS = b"multiprocessing.connection"


def _refuse_pipe_ends(obj: object) -> None:
    """Raise TypeError if ``obj`` holds a multiprocessing Connection."""
    from collections import ChainMap
    from multiprocessing.connection import Connection

    import cloudpickle

    base = cloudpickle.Pickler

    class Refusing(base):  # type: ignore[misc,valid-type]
        dispatch_table = ChainMap({Connection: _refuse_connection}, base.dispatch_table)

    Refusing(io.BytesIO(), PROTOCOL).dump(obj)


def _refuse_connection(conn: object) -> object:
    raise TypeError(
        "a multiprocessing Connection (an end of multiprocessing.Pipe()) cannot travel "
        "to another process as an argument or a result: it is a file descriptor of this "
        "process. Pass it to the workers in init_args (Pool(init=..., init_args=(conn,))), "
        "or use mc.Queue()"
    )


def _dumps(obj: object, big: list[memoryview] | None, to_worker: bool) -> bytes:
    keep = None if big is None else _out_of_band(big)
    try:
        data = pickle.dumps(obj, PROTOCOL, buffer_callback=keep)
    except Exception:
        return _cloud_dumps(obj, big)
    # A reference to __main__ would not resolve in a worker (it does not run the
    # user's script), so send such objects by value. A string that merely contains
    # the word costs one extra pickling, nothing more.
    if to_worker and b"__main__" in data:
        return _cloud_dumps(obj, big)
    return data


def _cloud_dumps(obj: object, big: list[memoryview] | None) -> bytes:
    import cloudpickle  # here: a worker loads it only for a result that needs it

    if big is not None:
        big.clear()  # a first, failed attempt may have collected some
    keep = None if big is None else _out_of_band(big)
    return cloudpickle.dumps(obj, PROTOCOL, buffer_callback=keep)  # type: ignore[no-any-return]


def _out_of_band(big: list[memoryview]) -> Callable[[pickle.PickleBuffer], bool]:
    def keep_in_band(buf: pickle.PickleBuffer) -> bool:
        try:
            view = buf.raw()
        except BufferError:  # not contiguous: pickled in the stream
            return True
        if view.nbytes < THRESHOLD:
            return True
        big.append(view)
        return False

    return keep_in_band


def code_with_source(
    ctor: Callable[..., types.CodeType],
    args: tuple[object, ...],
    filename: str,
    entry: tuple[int, None, list[str], str],
) -> types.CodeType:
    """In the worker: a code object whose source is in no file; its lines go into
    ``linecache`` (an mtime of None: ``checkcache`` keeps the entry)."""
    import linecache  # here: only such code needs it, and it imports tokenize

    linecache.cache.setdefault(filename, entry)
    return ctor(*args)


class _FunctionUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: object) -> object:
        if pid == MAIN_GLOBALS:
            import __main__

            return __main__.__dict__
        if type(pid) is tuple and pid[0] == BIG_PID:
            return global_value(pid[1], pid[2])
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def loads_code(data: bytes | memoryview) -> Any:
    """The worker-side counterpart of :func:`dumps_code`."""
    return _FunctionUnpickler(io.BytesIO(data)).load()


def why(exc: BaseException) -> str:
    """An error's text for a message; a ``SystemExit`` or ``KeyboardInterrupt``
    (raised by a ``__reduce__``) is named, not just its code."""
    if isinstance(exc, Exception):
        return str(exc)
    return f"pickling raised {exc!r}"


def ctrl_c(exc: BaseException, again: Callable[[], object]) -> bool:
    """Whether ``exc``, raised inside pickling or unpickling, is the user's
    Ctrl-C rather than the object's own doing (a ``__reduce__`` that raises
    ``KeyboardInterrupt``): a KeyboardInterrupt in the main thread, the only one
    a signal reaches, that does not happen again when ``again`` repeats the
    work (another error then, such as a result's segment already gone, does not
    count). A Ctrl-C must stop the program, never become one failed item."""
    if not isinstance(exc, KeyboardInterrupt):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        again()
    except KeyboardInterrupt:
        return False
    except BaseException:
        pass
    return True
