"""Task functions for the fault suite (module level: importable in every worker)."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import threading
import time
from typing import Any

GOOD = 10  # every non-faulty item x returns x * GOOD


def expected(x: int) -> int:
    return x * GOOD


def hang_on(x: int, bad: int = 5, seconds: float = 2.0) -> int:
    """Sleeps (releasing the GIL) on ``bad``."""
    if x == bad:
        time.sleep(seconds)
    return x * GOOD


def spin_in_c_on(x: int, bad: int = 5) -> int:
    """On ``bad``, a catastrophic regular expression: minutes of C code that never
    releases the GIL (no alarm or thread in the worker could interrupt it)."""
    if x == bad:
        re.match(r"(a+)+$", "a" * 40 + "b")
    return x * GOOD


def die_on(arg: tuple[str, int], bad: int = 3) -> int:
    """Kills its own worker on ``bad``: by os._exit, a segfault, or SIGKILL."""
    how, x = arg
    if x == bad:
        if how == "exit":
            os._exit(7)
        elif how == "segfault":
            ctypes.string_at(0)
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return x * GOOD


def pid_and(x: int) -> tuple[int, int]:
    return os.getpid(), x * GOOD


_HOARD: list[bytes] = []


def hoard(x: int, megabytes: int = 40) -> tuple[int, int]:
    """Leaks ``megabytes`` per call (touched, so resident): a leaky extension."""
    _HOARD.append(b"\1" * (megabytes << 20))
    return os.getpid(), x * GOOD


def rss(_: Any = None) -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def lock_on(x: int, bad: int = 4) -> Any:
    """Returns something that cannot be pickled on ``bad``."""
    return threading.Lock() if x == bad else x * GOOD


class TwoArgError(Exception):
    """Pickles, but cannot be rebuilt from its args."""

    def __init__(self, a: str, b: str):
        super().__init__(f"{a} and {b}")


class LockedError(Exception):
    """Carries an attribute that cannot be pickled."""

    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()


def odd_error_on(arg: tuple[str, int], bad: int = 2) -> int:
    kind, x = arg
    if x == bad:
        if kind == "init":
            raise TwoArgError("left", "right")
        if kind == "attr":
            raise LockedError("has a lock")
        raise ValueError("huge " + "x" * (8 << 20))
    return x * GOOD


def base_exception_on(arg: tuple[str, int], bad: int = 2) -> int:
    kind, x = arg
    if x == bad:
        if kind == "exit":
            raise SystemExit(4)
        raise KeyboardInterrupt
    return x * GOOD


def once_slow(arg: tuple[str, int]) -> int:
    """Hangs the first time it sees ``x == 2`` (marker file shared by the workers)."""
    folder, x = arg
    marker = os.path.join(folder, f"slow-{x}")
    if x == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(1.5)
    return x * GOOD


def broken_input(n: int, bad: int) -> Any:
    """A generator that raises at position ``bad``."""
    for i in range(n):
        if i == bad:
            raise LookupError("the input source failed")
        yield i


def shm_names(arr: Any) -> list[str]:
    """The manycore segments in /dev/shm while this task holds ``arr``."""
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith("manycore-"))


def mapped_segments(_: Any = None) -> list[str]:
    """Names of the manycore segments this worker has mapped right now."""
    with open("/proc/self/maps") as f:
        return sorted({line.rsplit("/", 1)[1].strip() for line in f if "/manycore-" in line})


def array_sum(arr: Any) -> float:
    return float(arr.sum())


def double(arr: Any) -> Any:
    return arr * 2


_STASH: list[Any] = []


def stash_and_sum(arr: Any) -> float:
    """Keeps the argument array after returning (a cache in the worker)."""
    _STASH.append(arr)
    return float(arr.sum())


def stashed_sums(_: Any = None) -> list[float]:
    return [float(a.sum()) for a in _STASH]


def fill_slice(args: tuple[Any, int, int]) -> int:
    out, lo, hi = args
    import numpy as np

    out[lo:hi] = np.arange(lo, hi)
    return hi - lo


def make_shared(n: int) -> Any:
    import manycore as mc

    arr = mc.shared_array((n,), "int64")
    arr[:] = 5
    return arr


def die_with_array(arr: Any) -> None:
    os._exit(3)


def blas_threads(_: Any = None) -> list[int]:
    """The thread counts of the BLAS libraries loaded in this worker."""
    import numpy as np
    from threadpoolctl import threadpool_info

    np.ones((4, 4)) @ np.ones((4, 4))  # make sure BLAS is loaded
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def load_model(scale: int) -> dict[str, Any]:
    """An init that builds per-worker state (stands for loading a model)."""
    return {"scale": scale, "pid": os.getpid(), "thread": threading.get_ident(), "calls": 0}


def predict(x: int) -> tuple[int, int]:
    import manycore as mc

    model = mc.worker_state()
    model["calls"] += 1  # state persists from task to task in a worker
    return x * model["scale"], model["calls"]


def state_identity(_: Any = None) -> tuple[int, int]:
    import manycore as mc

    return os.getpid(), id(mc.worker_state())


def write_exit_marker(folder: str) -> None:
    with open(os.path.join(folder, f"exit-{os.getpid()}-{threading.get_ident()}"), "w"):
        pass


def read_shared(key: str) -> Any:
    import manycore as mc

    return mc.shared()[key]


def shared_array_facts(_: Any = None) -> tuple[int, int, bool, float]:
    import manycore as mc

    table = mc.shared()["table"]
    return os.getpid(), id(table), bool(table.flags.writeable), float(table.sum())


def locked_write(args: tuple[Any, str, int]) -> None:
    """Writes a start line and an end line, with a pause between, under the lock."""
    lock, path, i = args
    with lock, open(path, "a") as fh:
        fh.write(f"start {i}\n")
        fh.flush()
        time.sleep(0.01)
        fh.write(f"end {i}\n")


def limited(args: tuple[Any, Any, int]) -> int:
    """Records how many tasks are inside the semaphore at once."""
    sem, inside, _ = args
    with sem:
        now = inside.increment()
        peak = now
        time.sleep(0.05)
        inside.increment(-1)
    return peak


def produce(args: tuple[Any, int, int]) -> int:
    q, lo, hi = args
    for i in range(lo, hi):
        q.put(("item", i))
    return hi - lo


def consume(args: tuple[Any, int]) -> list[int]:
    q, n = args
    return [q.get(timeout=30)[1] for _ in range(n)]


def bump(args: tuple[Any, int]) -> int:
    counter, times = args
    for _ in range(times):
        counter.increment()
    return times


def unsafe_bump(args: tuple[Any, int]) -> int:
    """Read-modify-write without the lock: updates get lost between processes."""
    value, times = args
    for _ in range(times):
        value.value += 1
    return times


def shared_pair(n: int) -> tuple[Any, Any]:
    """Returns one worker-made shared array twice (whole and a view)."""
    import manycore as mc

    arr = mc.shared_array((n,), "float64")
    arr[:] = 7.0
    return arr, arr[: n // 2]


def record_field(arr: Any) -> list[int]:
    return [int(v) for v in arr["x"]]


class _Unloadable:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("cannot be rebuilt in the parent")


def stash_then_unloadable(arr: Any) -> Any:
    _STASH.append(arr)
    return _Unloadable()
