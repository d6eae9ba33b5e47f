"""The chunk planner's decisions, without any process."""

from __future__ import annotations

import pytest

from manycore._scheduler._maprun import ChunkPlanner, InputSource


def test_one_item_until_measured() -> None:
    planner = ChunkPlanner(workers=4)
    assert planner.next_size(1000) == 1
    assert planner.next_size(None) == 1


def test_fixed_chunksize_wins() -> None:
    planner = ChunkPlanner(workers=4, chunksize=9)
    planner.observe(1, 1e-6)
    assert planner.next_size(1000) == 9


def test_tiny_items_grow_by_completions_only() -> None:
    planner = ChunkPlanner(workers=2)
    planner.observe(1, 1e-7)
    assert planner.next_size(10**9) == 4  # at most 4 x the largest finished batch
    assert planner.next_size(10**9) == 4  # dispatching alone does not grow it
    planner.observe(4, 4e-7)
    assert planner.next_size(10**9) == 16


def test_target_time_bounds_the_batch() -> None:
    planner = ChunkPlanner(workers=2, target=0.02)
    for _ in range(20):
        planner.observe(1000, 1.0)  # 1 ms per item
    assert planner.next_size(10**9) == 20


def test_long_items_stay_single() -> None:
    planner = ChunkPlanner(workers=2)
    planner.observe(1, 0.5)
    assert planner.next_size(100) == 1


def test_tail_is_split_across_workers() -> None:
    planner = ChunkPlanner(workers=4)
    for _ in range(20):
        planner.observe(1000, 0.1)  # 100 us per item
    assert planner.next_size(800) == 100  # remaining / (2 * workers)
    assert planner.next_size(40) == 10  # not below ~1 ms of work
    assert planner.next_size(3) == 3


def test_tiny_items_take_the_whole_tail_at_once() -> None:
    planner = ChunkPlanner(workers=4)
    for _ in range(20):
        planner.observe(100_000, 1e-3)  # 10 ns per item: 1 ms is 100,000 items
    assert planner.next_size(800) == 800


def test_external_limit() -> None:
    planner = ChunkPlanner(workers=1)
    for _ in range(20):
        planner.observe(100_000, 1e-3)
    assert planner.next_size(None, limit=64) == 64


def test_input_source_slices_sequences_and_reads_iterators_lazily() -> None:
    src = InputSource((range(10),), star=False)
    assert src.total == 10
    assert src.take(3) == (0, range(0, 3))
    assert src.take(100) == (3, range(3, 10))
    assert src.take(1) is None

    seen = []

    def gen():
        for i in range(5):
            seen.append(i)
            yield i

    lazy = InputSource((gen(),), star=False)
    assert lazy.total is None
    assert lazy.take(2) == (0, [0, 1])
    assert seen == [0, 1]

    zipped = InputSource(([1, 2], "ab"), star=False)
    assert zipped.star
    assert zipped.take(5) == (0, [(1, "a"), (2, "b")])


def test_big_array_items_are_recognised() -> None:
    np = pytest.importorskip("numpy")
    from manycore._scheduler._maprun import _array_bytes

    big = np.zeros(1 << 15)  # 256 KB
    assert _array_bytes(big) == big.nbytes
    assert _array_bytes((big, 3)) == big.nbytes
    assert _array_bytes({"image": big, "label": 1}) == big.nbytes
    assert _array_bytes([big, big]) == 2 * big.nbytes
    assert _array_bytes(np.zeros(10)) == 0  # small: not a "big" item
    assert _array_bytes("text") == 0


def test_a_cluster_opens_with_a_share_per_worker() -> None:
    # No probe round trip: one batch per worker, each of an equal share (the
    # backend stops it after its budget, with the rest unrun, if items are slow).
    planner = ChunkPlanner(workers=2, overhead=0.1, opening=1 << 16)
    assert planner.opens
    assert [planner.next_size(100_000), planner.next_size(50_000)] == [50_000, 50_000]
    assert planner.next_size(3) == 3
    # At most ``opening`` items (or ``limit``), in as many batches for each worker.
    assert ChunkPlanner(workers=2, opening=30_000).next_size(100_000) == 25_000
    assert ChunkPlanner(workers=2, opening=1 << 16).next_size(10**7) <= 1 << 16
    assert ChunkPlanner(workers=2, opening=1 << 16).next_size(100, limit=10) == 10
    assert ChunkPlanner(workers=2, overhead=0.1, opening=1 << 16).next_size(None) == 1
    fixed = ChunkPlanner(workers=2, chunksize=5, opening=1 << 16)
    assert not fixed.opens and fixed.next_size(100) == 5
    planner.observe(20, 0.2)
    assert not planner.opens


def test_a_budgeted_remote_batch_stops_with_the_rest_unrun() -> None:
    import os
    import time

    from manycore.backends._remote_run import run_remote

    def nap(x: int) -> int:
        time.sleep(0.01)
        return x

    answer = run_remote(nap, list(range(100)), (False, False, os.getpid(), 0.05), None, None, None)
    values = answer[0]
    assert isinstance(values, list) and 3 <= len(values) < 20
    assert values == list(range(len(values)))
    tiny = run_remote(abs, list(range(10_000)), (False, True, os.getpid(), 0.2), None, None, None)
    assert tiny[0] == list(range(10_000)) and tiny[4] is not None and len(tiny[4]) == 5
    # Failures keep their offsets in the whole batch, whichever slice ran them.
    failing = run_remote(
        _fail_on_5000, list(range(9000)), (False, False, os.getpid(), 5.0), None, None, None
    )
    assert len(failing[0]) == 9000 and failing[1] is not None and list(failing[1]) == [5000]


def _fail_on_5000(x: int) -> int:
    if x == 5000:
        raise ValueError("five thousand")
    return x
