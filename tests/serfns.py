"""A class whose methods read a module global that a pool's ``init`` sets in each
worker (tests/test_worker_code.py): they must run against the worker's module."""

from __future__ import annotations

VALUE = "parent"


def set_value(value: str) -> None:
    global VALUE
    VALUE = value


class K:
    @classmethod
    def get(cls) -> str:
        return VALUE

    @staticmethod
    def static_get() -> str:
        return VALUE

    def method_get(self) -> str:
        return VALUE

    @classmethod
    def fail(cls) -> None:
        raise ValueError(f"classmethod failed with {VALUE}")

    class Inner:
        @classmethod
        def get(cls) -> str:
            return VALUE


class Big:
    """Stands for a large global (``nbytes`` says 8 MB): counts how often this
    process pickles one, and (in ``REBUILT``) how often a worker rebuilds one."""

    nbytes = 8 << 20
    pickled = 0

    def __init__(self, tag: str):
        self.tag = tag

    def __reduce__(self) -> tuple[object, ...]:
        Big.pickled += 1
        return (_rebuild_big, (self.tag,))


REBUILT = 0


def _rebuild_big(tag: str) -> Big:
    global REBUILT
    REBUILT += 1
    return Big(tag)


def rebuilt() -> int:
    return REBUILT


class Unpicklable:
    nbytes = 8 << 20

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("this object refuses to be pickled")
