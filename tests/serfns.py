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
