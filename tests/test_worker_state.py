"""Worker state (init's return value), exit=, and Pool(shared=...)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

import manycore as mc
from faulty import (
    die_on,
    load_model,
    predict,
    read_shared,
    shared_array_facts,
    state_identity,
    write_exit_marker,
)


def test_init_return_value_is_the_worker_state(backend: tuple[str, str | None]) -> None:
    name, method = backend
    with mc.Pool(2, backend=name, start_method=method, init=load_model, init_args=(3,)) as pool:
        out = pool.map(predict, range(40), chunksize=1)
        assert [v for v, _ in out] == [3 * x for x in range(40)]
        # One state per worker, kept between tasks: the call counts add up to 40
        # and some worker saw more than one call.
        assert max(calls for _, calls in out) > 1
        ids = set(pool.map(state_identity, range(20)))
        assert len(ids) <= 2


def test_replacement_worker_runs_init_again(process_pool: mc.Pool) -> None:
    with mc.Pool(
        1, start_method=process_pool.start_method, init=load_model, init_args=(2,)
    ) as pool:
        assert pool.submit(predict, 5).result(timeout=30) == (10, 1)
        with pytest.raises(mc.WorkerCrashed):
            pool.submit(die_on, ("exit", 3)).result(timeout=30)
        assert pool.submit(predict, 5).result(timeout=30) == (10, 1)  # a fresh state


def test_exit_runs_in_each_worker(backend: tuple[str, str | None], tmp_path: Path) -> None:
    name, method = backend
    pool = mc.Pool(
        2,
        backend=name,
        start_method=method,
        exit=functools.partial(write_exit_marker, str(tmp_path)),
    )
    pids = pool.pids()
    assert pool.map(abs, range(-20, 0)) == list(range(20, 0, -1))
    pool.shutdown()
    markers = os.listdir(tmp_path)
    if name == "processes":
        assert sorted(int(m.split("-")[1]) for m in markers) == sorted(pids)
    else:
        assert 1 <= len(markers) <= 2


def test_shared_object(backend: tuple[str, str | None]) -> None:
    name, method = backend
    config = {"greeting": "hello", "sizes": list(range(100))}
    with mc.Pool(2, backend=name, start_method=method, shared=config) as pool:
        assert pool.map(read_shared, ["greeting"] * 10) == ["hello"] * 10
        assert pool.submit(read_shared, "sizes").result(timeout=30) == list(range(100))


def test_shared_arrays_reach_each_worker_once_read_only(process_pool: mc.Pool) -> None:
    np = pytest.importorskip("numpy")
    table = np.arange(1 << 18, dtype=np.float64)  # 2 MB: through shared memory
    with mc.Pool(2, start_method=process_pool.start_method, shared={"table": table}) as pool:
        facts = pool.map(shared_array_facts, range(30), chunksize=1)
    assert {f[3] for f in facts} == {float(table.sum())}
    assert not any(f[2] for f in facts)  # read-only in the workers
    per_worker = {}
    for pid, ident, _, _ in facts:
        per_worker.setdefault(pid, set()).add(ident)
    assert all(len(ids) == 1 for ids in per_worker.values())  # the same object every task


def test_worker_state_outside_a_pool() -> None:
    with pytest.raises(LookupError, match="worker_state"):
        mc.worker_state()
    with pytest.raises(LookupError, match="shared"):
        mc.shared()


def test_exit_must_be_callable() -> None:
    with pytest.raises(TypeError, match="exit must be callable"):
        mc.Pool(1, exit=3)  # type: ignore[arg-type]
