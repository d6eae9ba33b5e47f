"""Exceptions and objects that fight manycore: an exception class that refuses
``__cause__``/``__traceback__``/notes, a result or argument that will not load,
a ``__reduce__`` that raises ``SystemExit``. Each fails its own item, with the
documented error, and the pool goes on working."""

from __future__ import annotations

import asyncio
import threading

import pytest

import manycore as mc
from badpickle import (
    GOOD,
    CtrlCOnce,
    ExitOnReduce,
    FrozenError,
    RefusingError,
    Unloadable,
    async_uncooperative_on,
    exit_on_reduce_on,
    parent_exit_on,
    times_good,
    uncooperative_on,
    unloadable_on,
)

KINDS = [("frozen", FrozenError), ("refusing", RefusingError)]


def _arrived(err: BaseException, cls: type[BaseException]) -> None:
    """The task's own exception, or a RemoteError naming its type, arrived."""
    if isinstance(err, mc.RemoteError):
        assert err.type_name.endswith(cls.__qualname__)
    else:
        assert type(err) is cls


def _shutdown_returns() -> None:
    t = threading.Thread(target=mc.shutdown_default_pools, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "shutdown_default_pools() hung"


@pytest.mark.parametrize(("kind", "cls"), KINDS, ids=[k for k, _ in KINDS])
def test_uncooperative_exception_arrives(
    backend: tuple[str, str | None], kind: str, cls: type[BaseException]
) -> None:
    name, method = backend
    items = [(kind, x) for x in range(6)]
    with mc.Pool(2, backend=name, start_method=method) as pool:
        out = pool.map(uncooperative_on, items, on_error="collect", timeout=30)
        assert isinstance(out[2], mc.Failure)
        _arrived(out[2].exception, cls)
        assert [v for i, v in enumerate(out) if i != 2] == [x * GOOD for x in range(6) if x != 2]
        with pytest.raises((cls, mc.RemoteError)) as info:
            pool.map(uncooperative_on, items, timeout=30)
        _arrived(info.value, cls)
        future = pool.submit(uncooperative_on, (kind, 2))
        with pytest.raises((cls, mc.RemoteError)):
            future.result(timeout=30)
        # The pool is still usable: a following map works.
        assert pool.map(times_good, range(10), timeout=30) == [x * GOOD for x in range(10)]


@pytest.mark.parametrize(("kind", "cls"), KINDS, ids=[k for k, _ in KINDS])
def test_uncooperative_exception_default_pool(
    backend: tuple[str, str | None], kind: str, cls: type[BaseException]
) -> None:
    name, method = backend
    out = mc.map(
        uncooperative_on,
        [(kind, x) for x in range(4)],
        backend=name,
        start_method=method,
        on_error="collect",
        timeout=30,
    )
    _arrived(out[2].exception, cls)
    assert mc.map(times_good, range(4), backend=name, start_method=method) == [0, 10, 20, 30]
    _shutdown_returns()


@pytest.mark.parametrize(("kind", "cls"), KINDS, ids=[k for k, _ in KINDS])
def test_uncooperative_exception_asyncio(kind: str, cls: type[BaseException]) -> None:
    items = [(kind, x) for x in range(4)]
    with mc.Pool(2, backend="asyncio") as pool:
        out = pool.map(async_uncooperative_on, items, on_error="collect", timeout=30)
        _arrived(out[2].exception, cls)
        assert pool.map(async_uncooperative_on, [(kind, 0)], timeout=30) == [0]

    async def main() -> list[object]:
        return await mc.amap(async_uncooperative_on, items, on_error="collect", backend="asyncio")

    out = asyncio.run(main())
    _arrived(out[2].exception, cls)  # type: ignore[attr-defined]


# ------------------------------------------------- one bad item's data in a batch


def test_one_unloadable_result_fails_alone(process_pool: mc.Pool) -> None:
    out = process_pool.map(unloadable_on, range(10_000), on_error="collect", timeout=60)
    failed = [v for v in out if isinstance(v, mc.Failure)]
    assert [f.index for f in failed] == [7000]
    err = failed[0].exception
    assert type(err) is mc.SerializationError
    assert "unpickled in the parent" in str(err) and "item 7000 cannot be rebuilt" in str(err)
    assert any("input item 7000" in note for note in err.__notes__)
    assert [v for i, v in enumerate(out) if i != 7000] == [
        x * GOOD for x in range(10_000) if x != 7000
    ]
    assert process_pool.map(times_good, range(10)) == [x * GOOD for x in range(10)]


def test_one_unloadable_argument_fails_alone(process_pool: mc.Pool) -> None:
    items: list[object] = list(range(2_000))
    items[1500] = Unloadable(1500)
    out = process_pool.map(times_good, items, on_error="collect", timeout=60)
    failed = [v for v in out if isinstance(v, mc.Failure)]
    assert [f.index for f in failed] == [1500]
    err = failed[0].exception
    assert type(err) is mc.SerializationError
    assert "unpickled in the worker" in str(err) and "item 1500 cannot be rebuilt" in str(err)
    assert [v for i, v in enumerate(out) if i != 1500] == [
        x * GOOD for x in range(2_000) if x != 1500
    ]
    with pytest.raises(mc.SerializationError):
        process_pool.submit(times_good, Unloadable(3)).result(timeout=30)
    assert process_pool.map(times_good, range(10)) == [x * GOOD for x in range(10)]


# ------------------------------------- a BaseException raised inside __reduce__


@pytest.mark.parametrize("kind", ["exit", "interrupt"])
def test_base_exception_pickling_an_argument(process_pool: mc.Pool, kind: str) -> None:
    items: list[object] = list(range(6))
    items[3] = ExitOnReduce(kind)
    out = process_pool.map(times_good, items, on_error="collect", timeout=30)
    assert isinstance(out[3], mc.Failure)
    err = out[3].exception
    assert type(err) is mc.SerializationError and "input item 3" in str(err)
    assert "SystemExit" in str(err) or "KeyboardInterrupt" in str(err)
    assert [v for i, v in enumerate(out) if i != 3] == [x * GOOD for x in range(6) if x != 3]
    with pytest.raises(mc.SerializationError, match="argument 0"):
        process_pool.submit(times_good, ExitOnReduce(kind))
    assert process_pool.map(times_good, range(10)) == [x * GOOD for x in range(10)]


@pytest.mark.parametrize("kind", ["exit", "interrupt"])
def test_base_exception_pickling_a_result(process_pool: mc.Pool, kind: str) -> None:
    items = [(kind, x) for x in range(6)]
    out = process_pool.map(exit_on_reduce_on, items, on_error="collect", timeout=30)
    assert isinstance(out[2], mc.Failure)
    err = out[2].exception
    assert type(err) is mc.SerializationError and "cannot pickle the result" in str(err)
    assert [v for i, v in enumerate(out) if i != 2] == [x * GOOD for x in range(6) if x != 2]
    with pytest.raises(mc.SerializationError):
        process_pool.submit(exit_on_reduce_on, (kind, 2)).result(timeout=30)
    assert process_pool.map(times_good, range(10)) == [x * GOOD for x in range(10)]


def test_base_exception_pickling_an_exception(process_pool: mc.Pool) -> None:
    items = [("error", x) for x in range(6)]
    out = process_pool.map(exit_on_reduce_on, items, on_error="collect", timeout=30)
    err = out[2].exception
    assert isinstance(err, mc.RemoteError) and err.type_name.endswith("ExitOnReduceError")
    assert "cannot travel" in str(err) and "ExitOnReduceError" in out[2].traceback
    with pytest.raises(mc.RemoteError, match="cannot travel"):
        process_pool.submit(exit_on_reduce_on, ("error", 2)).result(timeout=30)
    assert process_pool.map(times_good, range(10)) == [x * GOOD for x in range(10)]


@pytest.mark.parametrize("kind", ["error", "value"])
def test_rebuild_failure_in_the_parent(process_pool: mc.Pool, kind: str) -> None:
    """A task's exception or result whose loading in the parent raises SystemExit
    fails its item; the in-flight task is not left stuck, the pool goes on."""
    items = [(kind, x) for x in range(6)]
    out = process_pool.map(parent_exit_on, items, on_error="collect", timeout=30)
    assert isinstance(out[2], mc.Failure)
    err = out[2].exception
    if kind == "error":
        assert isinstance(err, mc.RemoteError) and err.type_name.endswith("ParentExitError")
    else:
        assert type(err) is mc.SerializationError and "SystemExit" in str(err)
    assert [v for i, v in enumerate(out) if i != 2] == [x * GOOD for x in range(6) if x != 2]
    with pytest.raises((mc.RemoteError, mc.SerializationError)):
        process_pool.submit(parent_exit_on, (kind, 2)).result(timeout=30)
    assert process_pool.map(times_good, range(10), timeout=30) == [x * GOOD for x in range(10)]


def test_real_ctrl_c_while_pickling_still_interrupts(process_pool: mc.Pool) -> None:
    """Only what the object itself raises becomes a SerializationError: a Ctrl-C
    that lands while the caller's thread pickles an argument stays a
    KeyboardInterrupt (it does not happen again when manycore pickles once more)."""
    CtrlCOnce.pressed = False
    with pytest.raises(KeyboardInterrupt):
        process_pool.submit(times_good, CtrlCOnce(1))
    CtrlCOnce.pressed = False
    with pytest.raises(KeyboardInterrupt):
        mc.map(times_good, [1, CtrlCOnce(2), 3], backend="processes", workers=2)
