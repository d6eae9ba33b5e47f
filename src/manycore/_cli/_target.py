"""The FUNCTION of ``manycore run MODULE:FUNCTION``: found as ``python -m`` would find
it, and wrapped so that workers run each input as the command asks.

Worker processes unpickle :class:`Call` from here: this module imports little.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from manycore._cli._io import BadInput, UsageError, describe

__all__ = ["AsyncCall", "Call", "InputError", "load_function"]


def load_function(target: str) -> Callable[..., object]:
    """``MODULE:FUNCTION`` imported as ``python -m`` would (the current directory on
    ``sys.path``); MODULE may be a dotted name or a path to a ``.py`` file."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:FUNCTION (e.g. mytasks:process), got {target!r}")
    module = _import(module_name)
    obj: object = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = ".".join([module_name, *attr.split(".")[:i]])
            raise UsageError(f"{where} has no attribute {part!r}") from None
    if not callable(obj):
        raise UsageError(f"{target} is not callable (it is {type(obj).__name__})")
    return obj


def _import(name: str) -> ModuleType:
    if name.endswith(".py") or os.sep in name or (os.altsep and os.altsep in name):
        return _import_file(Path(name))
    _put_first_on_path(os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"no module named {name!r} (looked in the current directory and sys.path)"
            ) from None
        raise UsageError(_import_failed(name, exc)) from None
    except Exception as exc:  # a SyntaxError, or what the module raised as it ran
        raise UsageError(_import_failed(name, exc)) from None


def _import_file(path: Path) -> ModuleType:
    """A ``.py`` file, imported by its name from its folder (put first on ``sys.path``,
    as ``python FILE`` does) so that worker processes can import it too."""
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    if path.suffix != ".py":
        raise UsageError(f"{path}: a module file's name must end in .py")
    _put_first_on_path(str(path.resolve().parent))
    try:
        module = importlib.import_module(path.stem)
    except Exception as exc:
        raise UsageError(_import_failed(str(path), exc)) from None
    found = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != path.resolve():
        raise UsageError(
            f"{path} would be imported as module {path.stem!r}, which is already "
            f"{found or 'a built-in module'}: rename the file"
        )
    return module


def _put_first_on_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _import_failed(name: str, exc: BaseException) -> str:
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    else:  # the last frame of the user's code, not of the import machinery
        frames = traceback.extract_tb(exc.__traceback__)
        mine = [f for f in frames if not f.filename.startswith("<frozen ")]
        if mine and mine[-1].filename != __file__:
            where = f" ({mine[-1].filename}, line {mine[-1].lineno})"
    return f"importing {name} failed: {describe(exc)}{where}"


class Call:
    """FUNCTION as ``manycore run`` calls it: an input line that could not be read
    fails its item, and with ``--star`` a list gives the positional arguments."""

    def __init__(self, fn: Callable[..., object], star: bool):
        self.fn = fn
        self.star = star
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        self.__name__ = self.__qualname__ = name  # what mc's messages call it

    def __call__(self, item: Any) -> Any:  # a decoded JSON line; what FUNCTION returns
        if isinstance(item, BadInput):
            raise InputError(item.message)
        return self.fn(*item) if self.star else self.fn(item)


class AsyncCall(Call):
    """:class:`Call` for an ``async def`` FUNCTION (the asyncio backend)."""

    async def __call__(self, item: Any) -> object:
        return await super().__call__(item)


class InputError(ValueError):
    """An input line that is not JSON, or not a JSON array under ``--star``."""
