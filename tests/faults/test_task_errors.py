"""Exceptions raised by tasks: each error policy, and BaseExceptions."""

from __future__ import annotations

import pytest

import manycore as mc
from faulty import GOOD, base_exception_on, expected
from helpers import fail_on


def fresh_map_works(pool: mc.Pool) -> None:
    assert pool.map(expected, range(30)) == [x * GOOD for x in range(30)]


def test_raise_gives_the_first_failure(pool: mc.Pool) -> None:
    with pytest.raises(ValueError, match="bad input 7") as info:
        pool.map(fail_on, range(20))
    assert "input item 7" in " ".join(getattr(info.value, "__notes__", []))
    fresh_map_works(pool)


def test_skip_and_collect(pool: mc.Pool) -> None:
    assert pool.map(fail_on, range(12), on_error="skip") == [x for x in range(12) if x != 7]
    out = pool.map(fail_on, range(12), on_error="collect")
    failure = out[7]
    assert isinstance(failure, mc.Failure)
    assert (failure.index, failure.input) == (7, 7)
    assert type(failure.exception) is ValueError and "bad input 7" in str(failure.exception)
    assert "fail_on" in failure.traceback
    assert out[:7] + out[8:] == [x for x in range(12) if x != 7]
    fresh_map_works(pool)


@pytest.mark.parametrize("kind", ["exit", "interrupt"])
def test_base_exception_fails_only_its_item(backend: tuple[str, str | None], kind: str) -> None:
    name, method = backend
    if name == "serial":
        pytest.skip("serial runs in the caller's thread: SystemExit and Ctrl-C are the caller's")
    with mc.Pool(2, backend=name, start_method=method) as pool:
        out = pool.map(base_exception_on, [(kind, x) for x in range(6)], on_error="collect")
        err = out[2].exception
        assert type(err) is (SystemExit if kind == "exit" else KeyboardInterrupt)
        assert [v for i, v in enumerate(out) if i != 2] == [0, 10, 30, 40, 50]
        fresh_map_works(pool)
        assert len(pool.pids()) == (2 if name == "processes" else 0)
