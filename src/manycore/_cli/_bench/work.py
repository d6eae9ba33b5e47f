"""The work the suite times, and where those functions live."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FunctionType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = [
    "ALL_WORKLOADS",
    "PACKAGE_WORK",
    "Array",
    "Work",
    "array_sum",
    "calibrate_spin",
    "echo",
    "hog",
    "noop",
    "spin",
    "square",
    "uneven_ms",
]

ALL_WORKLOADS = "abcdefgh"  # (a)-(h): see manycore._cli._bench
Array = Any  # a NumPy array: NumPy is optional, so it is not typed here


def square(x: int) -> int:
    return x * x


def noop(x: object) -> object:
    return x


def spin(n: int) -> int:
    """Pure-Python CPU work that holds the GIL; ``n`` loops (calibrated at start)."""
    acc = 0
    for i in range(n):
        acc += i * i % 7
    return acc


def uneven_ms(count: int, mean_ms: float, seed: int = 18) -> list[float]:
    """``count`` durations (ms) with a heavy tail (lognormal, sigma 1, fixed seed),
    scaled to average ``mean_ms``: a few items take many times the typical one."""
    import random

    rng = random.Random(seed)
    raw = [rng.lognormvariate(0.0, 1.0) for _ in range(count)]
    scale = mean_ms * count / sum(raw)
    return [x * scale for x in raw]


def hog(stop: object) -> None:
    """A CPU hog beside the pool (workload (h)): spins until ``stop`` is set."""
    while not stop.is_set():  # type: ignore[attr-defined]  # a multiprocessing Event
        spin(100_000)


def array_sum(a: Array) -> object:
    return a.sum()


@dataclass(frozen=True)
class Work:
    """The work functions of a run, and where they live: ``benchmarks/run.py`` passes
    these remade in the script's ``__main__`` (:meth:`remade_in`: manycore and loky
    send them by value, as for a user's script); ``manycore bench`` uses these
    importable ones."""

    square: Callable[[int], int]
    noop: Callable[[object], object]
    spin: Callable[[int], int]
    array_sum: Callable[[Array], object]
    origin: str

    def remade_in(self, namespace: dict[str, object], origin: str) -> Work:
        """These functions remade as ``namespace``'s own (a script's ``__main__``
        globals) and bound there by name, so they travel as a user's script's do:
        by value (manycore, loky) or by name from ``__main__`` (fork-based peers)."""
        names = ("square", "noop", "spin", "array_sum")
        remade = {name: _remade(getattr(self, name), namespace) for name in names}
        namespace.update(remade)
        return dataclasses.replace(self, origin=origin, **remade)


PACKAGE_WORK = Work(
    square, noop, spin, array_sum, "the importable module `manycore._cli._bench.work`"
)


def _remade(fn: FunctionType, namespace: dict[str, object]) -> FunctionType:
    return FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)


def calibrate_spin(seconds: float, spin: Callable[[int], object] = spin) -> int:
    """Loops of ``spin`` that take about ``seconds`` on this machine (best of 5)."""
    probe = 200_000
    best = min(_timed(spin, probe) for _ in range(5))
    return max(1, round(probe * seconds / best))


def _timed(fn: Callable[[int], object], arg: int) -> float:
    started = time.perf_counter()
    fn(arg)
    return time.perf_counter() - started


def echo(conn: Connection) -> None:
    """Child of the raw-pipe reference: send back what arrives until ``None``."""
    while (message := conn.recv()) is not None:
        conn.send(message)
