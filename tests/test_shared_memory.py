"""Large buffers travel through shared memory; mc.shared_array is seen by every worker."""

from __future__ import annotations

import gc
import os

import pytest

np = pytest.importorskip("numpy")

import manycore as mc  # noqa: E402
from faulty import (  # noqa: E402
    array_sum,
    die_with_array,
    double,
    fill_slice,
    make_shared,
    shm_names,
    stash_and_sum,
    stashed_sums,
)
from helpers import manycore_segments  # noqa: E402

MB = 1 << 20


def ours() -> list[str]:
    return sorted(n for n in manycore_segments() if n.startswith("manycore-"))


def test_large_arguments_go_through_shared_memory(process_pool: mc.Pool) -> None:
    big = np.arange(MB // 8 * 2, dtype=np.float64)  # 2 MB
    small = np.arange(1000, dtype=np.float64)
    # (Before any large one: segments are kept for reuse afterwards.)
    assert process_pool.submit(shm_names, small).result(timeout=30) == []
    seen_big = process_pool.submit(shm_names, big).result(timeout=30)
    assert any(n.startswith(f"manycore-{os.getpid()}n") for n in seen_big)
    arrays = [np.random.default_rng(i).random(MB // 8 * 3) for i in range(6)]
    assert process_pool.map(array_sum, arrays) == [float(a.sum()) for a in arrays]


def test_large_results_come_back_through_shared_memory(process_pool: mc.Pool) -> None:
    arrays = [np.full(MB // 4, i, dtype=np.int32) for i in range(5)]
    out = process_pool.map(double, arrays)
    for i, got in enumerate(out):
        assert got.dtype == np.int32 and got.shape == (MB // 4,) and (got == 2 * i).all()
    # The parent removed each result's segment once it mapped it; what is left are
    # its own argument segments, kept for reuse until the pool closes.
    assert all(n.startswith(f"manycore-{os.getpid()}n") for n in ours())


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_a_worker_keeps_its_argument_mappings(
    backend: tuple[str, str | None],
) -> None:
    from faulty import mapped_segments

    if backend[0] != "processes":
        pytest.skip("shared-memory transport is for processes")
    with mc.Pool(1, start_method=backend[1]) as pool:
        arrays = [np.full(MB // 4, i, dtype=np.float64) for i in range(6)]
        assert pool.map(array_sum, arrays, chunksize=1) == [float(i * MB // 4) for i in range(6)]
        # Idle now, the worker still maps the parent's (reused) argument segments,
        # so the next map does not map them again...
        held = pool.submit(mapped_segments).result(timeout=30)
        assert held and set(held) <= set(ours())
        assert all(n.startswith(f"manycore-{os.getpid()}n") for n in held)
        # ...and their data is the new tasks', not stale.
        assert pool.map(array_sum, arrays[::-1], chunksize=1) == [
            float(i * MB // 4) for i in reversed(range(6))
        ]


def test_non_contiguous_and_mixed_arguments(process_pool: mc.Pool) -> None:
    grid = np.arange(4 * MB // 8, dtype=np.float64).reshape(-1, 16)
    column = grid[:, 3]  # not contiguous: pickled in the stream
    fortran = np.asfortranarray(grid)
    assert process_pool.map(array_sum, [column, fortran, grid]) == [
        float(column.sum()),
        float(fortran.sum()),
        float(grid.sum()),
    ]


def test_an_array_a_task_keeps_is_never_overwritten(backend: tuple[str, str | None]) -> None:
    if backend[0] != "processes":
        pytest.skip("shared-memory transport is for processes")
    with mc.Pool(1, start_method=backend[1]) as pool:
        arrays = [np.full(MB // 4, i, dtype=np.float64) for i in range(8)]
        sums = pool.map(stash_and_sum, arrays, chunksize=1)
        # Segments are reused for later tasks; the stashed arrays must be intact.
        assert pool.map(array_sum, [np.zeros(MB // 4)] * 8, chunksize=1) == [0.0] * 8
        assert pool.submit(stashed_sums).result(timeout=30) == sums


def test_shared_array_filled_in_parallel(process_pool: mc.Pool) -> None:
    out = mc.shared_array((400_000,), "int64")
    assert type(out).__name__ == "SharedArray" and out.dtype == np.int64
    assert (out == 0).all()
    cuts = [(out, lo, lo + 100_000) for lo in range(0, 400_000, 100_000)]
    assert process_pool.map(fill_slice, cuts) == [100_000] * 4
    assert (out == np.arange(400_000)).all()


def test_shared_array_from_an_array_and_removal() -> None:
    source = np.arange(12.0).reshape(3, 4)
    arr = mc.shared_array(source)
    assert (arr == source).all() and arr.shape == (3, 4)
    assert len(ours()) == 1
    view = arr[1:]
    del arr
    gc.collect()
    assert len(ours()) == 1  # a view still uses it
    del view
    gc.collect()
    assert ours() == []


def test_shared_array_made_by_a_worker_is_handed_over(process_pool: mc.Pool) -> None:
    small, big = process_pool.map(make_shared, [3, 300_000])
    assert type(big).__name__ == "SharedArray" and (big == 5).all() and big.shape == (300_000,)
    assert all(n.startswith(f"manycore-{os.getpid()}n") for n in ours())
    # The parent owns it now: it can pass it to tasks, and it goes with its arrays.
    assert process_pool.map(array_sum, [big]) == [1_500_000.0]
    del small, big
    gc.collect()
    assert ours() == []


@pytest.mark.parametrize(
    ("args", "error"),
    [(("a",), TypeError), (((-1, 2),), ValueError), (((3,), object), TypeError)],
)
def test_shared_array_bad_arguments(args: tuple[object, ...], error: type) -> None:
    with pytest.raises(error, match="shared_array"):
        mc.shared_array(*args)


def test_a_crash_leaves_no_segment(process_pool: mc.Pool) -> None:
    arrays = [np.ones(MB // 4) for _ in range(4)]
    with pytest.raises(mc.WorkerCrashed):
        process_pool.map(die_with_array, arrays)
    assert process_pool.map(array_sum, arrays) == [float(MB // 4)] * 4
    assert all(n.startswith(f"manycore-{os.getpid()}n") for n in ours())


def test_force_cancel_of_a_queued_task_with_big_arguments() -> None:
    import time

    from faulty import hang_on

    with mc.Pool(1) as pool:
        running = pool.submit(hang_on, 5, seconds=0.5)
        time.sleep(0.1)
        queued = pool.submit(array_sum, np.ones(MB // 4))
        assert pool.cancel(queued, force=True)
        assert pool.submit(array_sum, np.ones(MB // 4)).result(timeout=30) == MB // 4
        assert running.result(timeout=30) == 50


def test_a_kept_input_survives_a_result_that_will_not_load() -> None:
    from faulty import stash_then_unloadable

    with mc.Pool(1) as pool:
        first = np.ones(MB // 4)
        with pytest.raises(mc.SerializationError):
            pool.submit(stash_then_unloadable, first).result(timeout=30)
        pool.map(array_sum, [np.full(MB // 4, 99.0)] * 4, chunksize=1)
        assert pool.submit(stashed_sums).result(timeout=30) == [float(MB // 4)]


def test_worker_made_array_returned_twice(process_pool: mc.Pool) -> None:
    from faulty import shared_pair

    whole, half = process_pool.submit(shared_pair, 1000).result(timeout=30)
    assert (whole == 7.0).all() and half.shape == (500,) and (half == 7.0).all()
    half[0] = 1.0
    assert whole[0] == 1.0  # the same memory


def test_structured_dtype_survives(process_pool: mc.Pool) -> None:
    from faulty import record_field

    arr = mc.shared_array((4,), np.dtype([("x", "<i4"), ("y", "<f8")]))
    arr["x"] = [1, 2, 3, 4]
    assert process_pool.submit(record_field, arr).result(timeout=30) == [1, 2, 3, 4]


def test_another_library_unpickling_does_not_take_it_over(process_pool: mc.Pool) -> None:
    import pickle

    arr = mc.shared_array(np.arange(10.0))
    copy = pickle.loads(pickle.dumps(arr))  # as a foreign process would
    assert (copy == arr).all()
    assert process_pool.submit(array_sum, arr).result(timeout=30) == 45.0
