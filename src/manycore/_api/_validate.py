"""Argument checks shared by every entry point: clear errors before work starts."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from typing import Any

from manycore.backends import backend_names, get_backend, refuse_option

__all__ = [
    "check_backend",
    "check_bool",
    "check_callable",
    "check_checkpoint",
    "check_choice",
    "check_count",
    "check_exception_types",
    "check_gpus",
    "check_gpus_on",
    "check_iterables",
    "check_memory",
    "check_positive_int",
    "check_progress",
    "check_start_method",
    "check_thread_name_prefix",
    "check_timeout",
    "check_workers",
]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def check_callable(value: Any, name: str, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r:.80}")


def check_positive_int(value: Any, name: str) -> int | None:
    """``None`` or a whole number of at least 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number of at least 1 or None, got {value!r:.80}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def check_cluster(backend: str, address: Any, client: Any, workers: int | None) -> None:
    """``address=`` and ``client=`` name an existing cluster (backends that accept
    them), whose size then decides the workers."""
    _check_given(backend, workers, address=address, client=client)


def check_workers(workers: Any, concurrency: Any, backend: str) -> int | None:
    """``workers``, or ``concurrency`` (where the backend accepts it: coroutines at
    once, the same thing as workers there); None for the backend's default."""
    return _check_given(backend, check_positive_int(workers, "workers"), concurrency=concurrency)


def check_gpus_on(
    backend: str, workers: int | None, gpus: Any, address: Any = None, client: Any = None
) -> int | None:
    """``gpus`` where the backend accepts it (with the cluster it names, if any:
    ids mean nothing there); the workers it implies (by default one per device)."""
    return _check_given(backend, workers, gpus=gpus, address=address, client=client)


def check_gpus(value: Any) -> int | tuple[int, ...] | None:
    """``gpus``: None, a count of devices (at least 1), or distinct device ids
    (whole numbers from 0), as a tuple."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(
                f"gpus={value} must be at least 1 device (or None: no worker is pinned)"
            )
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"gpus must be a count or a list of device ids, got {value!r:.80}")
    ids = tuple(value)
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or i < 0]
    if bad or not ids:
        what = f"{bad[0]!r} is not" if bad else "none is"
        raise ValueError(f"gpus={value!r:.80}: {what} a device id (a whole number from 0)")
    if len(set(ids)) < len(ids):
        raise ValueError(
            f"gpus={value!r:.80} names a device twice; to put several workers on one "
            "device, give more workers than devices (they share them evenly)"
        )
    return ids


def _check_given(backend: str, workers: int | None, **options: Any) -> int | None:
    """Options of one backend: refused where ``backend`` does not accept them,
    else checked by it (``backend`` may be "auto", which accepts none)."""
    given = {name: value for name, value in options.items() if value is not None}
    if "concurrency" in given:
        given["concurrency"] = check_positive_int(given["concurrency"], "concurrency")
    if "gpus" in given:
        given["gpus"] = check_gpus(given["gpus"])
    known = backend in backend_names()
    accepts = get_backend(backend).accepts if known else frozenset()
    for name, value in given.items():
        if name not in accepts:
            raise refuse_option(name, value, backend)
    return get_backend(backend).check_options(workers, given) if known else workers


def check_count(value: Any, name: str) -> int:
    """A whole number of at least 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number of at least 0, got {value!r:.80}")
    if value < 0:
        raise ValueError(f"{name} must be at least 0, got {value}")
    return value


def check_exception_types(value: Any, name: str) -> tuple[type[BaseException], ...]:
    """An exception class or a tuple of them, as a tuple."""
    types_ = value if isinstance(value, tuple) else (value,)
    if not types_ or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types_):
        raise TypeError(f"{name} must be an exception class or a tuple of them, got {value!r:.80}")
    return types_


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r:.80}")
    return value


def check_progress(value: Any) -> bool | str:
    """``progress``: True or False, or a string, the bar's label."""
    if not isinstance(value, (bool, str)):
        raise TypeError(
            f"progress must be True, False or a label for the bar (a str such as "
            f"'Downloading'), got {type(value).__name__} {value!r:.80}"
        )
    if value == "":
        raise ValueError("progress='' is an empty label: give True, False or a label")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not valid; choose one of {valid}")
    return str(value)


def check_checkpoint(checkpoint: Any, resume: Any) -> str | None:
    """``checkpoint``: None or a file path (str or ``os.PathLike``), as a str.
    ``resume``: True, False or "force" (checked even without a checkpoint)."""
    if not (isinstance(resume, bool) or (isinstance(resume, str) and resume == "force")):
        raise ValueError(
            f"resume={resume!r} is not valid; choose True (use what the checkpoint file "
            "holds if it matches), 'force' (use it even though the function or some "
            "inputs changed) or False (discard it and start over)"
        )
    if checkpoint is None:
        return None
    path = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None
    if not isinstance(path, str):
        raise TypeError(
            f"checkpoint must be a file path (a str or os.PathLike) or None, got "
            f"{type(checkpoint).__name__} {checkpoint!r:.80}"
        )
    if not path:
        raise ValueError("checkpoint='' names no file; give a path such as 'run.sqlite'")
    return path


def check_backend(name: Any, *, auto: bool = False) -> str:
    """A registered backend's name, or ``"auto"`` where the caller supports it
    (``auto=True``: mc.map/imap/starmap, which pick a backend per call)."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a backend name (a str), got {name!r:.80}")
    if name == "auto":
        if auto:
            return name
        valid = ", ".join(repr(n) for n in backend_names())
        raise ValueError(
            "backend='auto' picks a backend per call, so it is for mc.map, mc.imap and "
            f"mc.starmap only; here choose one of {valid}"
        )
    get_backend(name)  # raises ValueError listing the valid names
    return name


def check_start_method(method: Any, backend: str) -> None:
    _check_given(backend, None, start_method=method)


def check_thread_name_prefix(prefix: Any, backend: str) -> str | None:
    """The names of a thread backend's threads (``f"{prefix}_{slot}"``); "" or
    None: the backend's own names."""
    if prefix is not None and not isinstance(prefix, str):
        raise TypeError(f"thread_name_prefix must be a str, got {prefix!r:.80}")
    _check_given(backend, None, thread_name_prefix=prefix or None)
    return prefix or None


def check_iterables(iterables: tuple[Any, ...], name: str = "iterables") -> None:
    if not iterables:
        raise TypeError(f"{name}: give at least one iterable of inputs")
    for i, it in enumerate(iterables):
        if not isinstance(it, Iterable):
            raise TypeError(
                f"{name}[{i}] must be iterable (a list, range, generator, ...), "
                f"got {type(it).__name__}"
            )


def check_init_args(value: Any) -> tuple[Any, ...]:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"init_args must be a tuple of arguments for init, got {value!r:.80}")
    return tuple(value)


def check_timeout(value: Any, name: str = "timeout") -> float | None:
    """``None`` (no limit) or a number of seconds above 0 (``math.inf``: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r:.80}")
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{name} must be above 0 seconds, got {value!r}")
    return None if value == math.inf else float(value)


def check_memory(value: Any, name: str) -> int | None:
    """``None`` or a size in bytes: an int, or a string such as ``"512MB"`` or ``"2GiB"``."""
    if value is None:
        return None
    size: float
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        unit = match.group(2).upper() if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"{name}={value!r} is not a size; give bytes as an int or a string such "
                "as '512MB' or '2GiB'"
            )
        size = float(match.group(1)) * _UNITS[unit]
    elif isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        raise TypeError(f"{name} must be bytes (an int, or a str like '2GB'), got {value!r:.40}")
    if size < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {value!r}")
    return int(size)
