"""Objects and exceptions that fight pickling or attribute setting (module level:
importable in every worker). Used by tests/faults/test_uncooperative.py."""

from __future__ import annotations

import dataclasses
from typing import Any

GOOD = 10  # every good item x returns x * GOOD


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """Refuses every attribute: ``__traceback__``, ``__cause__``, ``__notes__``."""

    code: int


class RefusingError(Exception):
    """Its ``__setattr__`` refuses the attributes manycore would set."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("__cause__", "__traceback__", "__notes__", "__context__"):
            raise AttributeError(f"{name} is not for you")
        super().__setattr__(name, value)


def uncooperative_on(arg: tuple[str, int], bad: int = 2) -> int:
    kind, x = arg
    if x == bad:
        if kind == "frozen":
            raise FrozenError(x)
        raise RefusingError(f"refusing {x}")
    return x * GOOD


async def async_uncooperative_on(arg: tuple[str, int], bad: int = 2) -> int:
    return uncooperative_on(arg, bad)


class Unloadable:
    """Pickles fine, fails to load (anywhere)."""

    def __init__(self, x: int):
        self.x = x

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_load, (self.x,))


def _refuse_load(x: int) -> None:
    raise RuntimeError(f"item {x} cannot be rebuilt")


def unloadable_on(x: int, bad: int = 7000) -> Any:
    """A result the parent cannot load on ``bad``."""
    return Unloadable(x) if x == bad else x * GOOD


def times_good(x: int) -> int:
    return x * GOOD


class ExitOnReduce:
    """``__reduce__`` raises a BaseException (``SystemExit`` or ``KeyboardInterrupt``)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        if self.kind == "exit":
            raise SystemExit(3)
        raise KeyboardInterrupt


class ExitOnReduceError(Exception):
    """An exception whose pickling raises ``SystemExit``."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise SystemExit(5)


def exit_on_reduce_on(arg: tuple[str, int], bad: int = 2) -> Any:
    """On ``bad``: a result that raises ``kind`` when pickled ('exit'/'interrupt'),
    or ('error') an exception that raises SystemExit when pickled."""
    kind, x = arg
    if x == bad:
        if kind == "error":
            raise ExitOnReduceError("cannot travel")
        return ExitOnReduce(kind)
    return x * GOOD


def plain(x: Any) -> Any:
    """Identity on a good item; a placeholder the argument tests map over."""
    return x if isinstance(x, int) else "ran"


def _in_worker() -> bool:
    from manycore._transport import _shared

    return bool(_shared.IN_WORKER)


def _exit_in_parent(cls: type[Any], message: str) -> Any:
    """Rebuilds in a worker (manycore checks exceptions round-trip there); in the
    parent it raises SystemExit, as a buggy ``__setstate__`` might."""
    if not _in_worker():
        raise SystemExit(7)
    return cls(message)


class ParentExitError(Exception):
    """An exception whose rebuilding in the parent raises SystemExit."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_exit_in_parent, (ParentExitError, str(self)))


class ParentExitValue:
    def __init__(self, message: str):
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_exit_in_parent, (ParentExitValue, self.message))


def parent_exit_on(arg: tuple[str, int], bad: int = 2) -> Any:
    """On ``bad``: raises ('error') or returns ('value') something whose loading in
    the parent raises SystemExit."""
    kind, x = arg
    if x == bad:
        if kind == "error":
            raise ParentExitError("will not load here")
        return ParentExitValue("will not load here")
    return x * GOOD


class CtrlCOnce:
    """The first pickling of any CtrlCOnce meets a real Ctrl-C (SIGINT to this
    process), as if the user pressed it just then; later ones pickle fine."""

    pressed = False

    def __init__(self, x: int):
        self.x = x

    def __reduce__(self) -> tuple[Any, ...]:
        if not CtrlCOnce.pressed:
            import os
            import signal
            import time

            CtrlCOnce.pressed = True
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises KeyboardInterrupt in here
        return (CtrlCOnce, (self.x,))
