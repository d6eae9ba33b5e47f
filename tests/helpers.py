"""Module-level task functions: importable in workers under every start method;
and ``bounded``, which the tests use to call what might hang."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def identity(x: Any) -> Any:
    return x


def fail_on(x: int, bad: int = 7) -> int:
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def crash_on(x: int, bad: int = 3) -> int:
    if x == bad:
        os._exit(7)
    return x * 10


def sleep_then(x: float) -> float:
    time.sleep(x)
    return x


def getpid(_: Any = None) -> int:
    return os.getpid()


class OddError(Exception):
    """Pickles, but cannot be rebuilt: it is made from two arguments, and holds
    one. (``__new__`` too: importing dask.distributed installs tblib's pickling
    of every exception class, which skips ``__init__`` but not ``__new__``.)"""

    def __new__(cls, a: str, b: str) -> OddError:
        return super().__new__(cls, f"{a}/{b}")

    def __init__(self, a: str, b: str):
        super().__init__(f"{a}/{b}")


def raise_odd(_: Any) -> None:
    raise OddError("x", "y")


def raise_system_exit(_: Any) -> None:
    raise SystemExit(4)


_STATE: dict[str, Any] = {}


def set_state(value: Any) -> None:
    _STATE["value"] = value


def get_state(_: Any = None) -> Any:
    return _STATE.get("value")


def failing_init() -> None:
    raise RuntimeError("init exploded")


def _explode() -> None:
    raise RuntimeError("cannot rebuild in parent")


class Unrebuildable:
    """Pickles in the worker; unpickling it in the parent raises."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_explode, ())


def unrebuildable_at(x: int, bad: int = 3) -> Any:
    return Unrebuildable() if x == bad else x


def pause_then(pair: tuple[float, Any]) -> Any:
    time.sleep(pair[0])
    return pair[1]


def flaky(arg: tuple[str, int, int]) -> int:
    """Fails the first ``fails`` calls for ``x`` (counted in files under ``folder``:
    shared by every worker process), then returns ``x * 10``."""
    folder, x, fails = arg
    marker = os.path.join(folder, f"{x}.calls")
    with open(marker, "a") as fh:
        fh.write(".")
    with open(marker) as fh:
        calls = len(fh.read())
    if calls <= fails:
        raise ConnectionError(f"flaky failure {calls} for {x}")
    return x * 10


def crash_once(arg: tuple[str, int]) -> int:
    """Kills its worker the first time it sees ``x == 2``; fine afterwards."""
    folder, x = arg
    marker = os.path.join(folder, f"crashed-{x}")
    if x == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return x


def type_error_on(x: int, bad: int = 2) -> int:
    if x == bad:
        raise TypeError("not retryable")
    return x


def manycore_segments() -> set[str]:
    """The manycore names in /dev/shm that this test run can own: those of this
    process, of its children, or of processes gone. A segment named after a
    live process outside this tree belongs to another program (another test run
    on the same machine) and would make a leak check fail for nothing."""
    import re

    import psutil

    try:
        names = {n for n in os.listdir("/dev/shm") if "manycore-" in n}
    except OSError:
        return set()
    me = psutil.Process()
    family = {me.pid} | {p.pid for p in me.children(recursive=True)}

    def foreign(name: str) -> bool:
        found = re.search(r"manycore-(\d+)n", name)
        if found is None:
            return False
        pid = int(found.group(1))
        return pid not in family and psutil.pid_exists(pid)

    return {n for n in names if not foreign(n)}


def raise_it(exc: BaseException) -> None:
    raise exc


def bounded(call: Callable[[], Any], bound: float = 30.0) -> Any:
    """``call()`` in a daemon thread: its result, or a failure (not a hung test
    run) if it has not returned within ``bound`` seconds."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"the call hung (over {bound} s)"
    if errors:
        raise errors[0]
    return out[0]
