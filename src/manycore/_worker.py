"""The loop that runs inside each worker process.

A worker reads frames from its task pipe, runs each batch with
:func:`manycore._batch.run_batch` and writes one result frame per batch. It is
single-threaded and blocks only in ``read`` on its task pipe; end of file there
means the parent is gone or the pool is closing, and the worker exits.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import Any

import cloudpickle

from . import _wire
from ._batch import BatchResult, run_batch
from ._remote import pack_exception
from ._serialize import loads_code

__all__ = ["main"]

_HEAD = struct.Struct("<I")  # size of the task's head, before its body


def _encode_result(key: int, result: BatchResult) -> bytes:
    failures = None
    if result.failures:
        failures = {i: pack_exception(e) for i, e in result.failures.items()}
    message = (_wire.RESULT, key, result.values, failures, result.elapsed)
    try:
        return pickle.dumps(message, 5)
    except Exception:
        pass
    try:
        return cloudpickle.dumps(message, 5)  # type: ignore[no-any-return]
    except Exception:
        pass
    # Some value will not pickle: fail those items alone, keep the others.
    from ._errors import SerializationError

    values = list(result.values)
    failures = dict(failures or {})
    for i, value in enumerate(values):
        try:
            cloudpickle.dumps(value, 5)
        except Exception as exc:
            values[i] = None
            err = SerializationError(
                f"cannot pickle the result of type {type(value).__name__!r} to send it "
                f"back from the worker: {exc}"
            )
            failures[i] = pack_exception(err)
    return pickle.dumps((_wire.RESULT, key, values, failures, result.elapsed), 5)


def _serve(task_fd: int, result_fd: int) -> int:
    first = _wire.read_frame(task_fd)
    if first is None:
        return 0
    _, init_blob = pickle.loads(first)
    if init_blob is not None:
        init, init_args = loads_code(init_blob)
        try:
            init(*init_args)
        except BaseException as exc:
            message = pickle.dumps((_wire.INIT_FAILED, pack_exception(exc)), 5)
            _wire.write_all(result_fd, _wire.frame(message))
            return 3
    fns: dict[int, Any] = {}
    loads = pickle.loads
    read_frame = _wire.read_frame
    while True:
        data = read_frame(task_fd)
        if data is None:
            return 0
        (head_size,) = _HEAD.unpack_from(data)
        view = memoryview(data)
        key, fn_id, fn_blob, reset, star = loads(view[4 : 4 + head_size])
        items, kwargs = loads(view[4 + head_size :])
        del view, data
        if reset:
            fns.clear()
        if fn_blob is not None:
            fn = fns[fn_id] = loads_code(fn_blob)
        else:
            fn = fns[fn_id]
        result = run_batch(fn, items, star, kwargs, BaseException)
        del items, fn
        _wire.write_all(result_fd, _wire.frame(_encode_result(key, result)))


def main(task_fd: int, result_fd: int) -> None:
    """Entry point of a worker process; never returns."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides
    # what stops, so the workers ignore it rather than dying mid-item.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 1
    try:
        code = _serve(task_fd, result_fd)
    except BrokenPipeError:
        code = 0  # the parent is gone: nobody to report to
    except BaseException:  # a broken pipe or a bug here: say so, then exit
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
