"""Shared primitives as task arguments: the tutorial patterns, on processes and threads.

Each test fails if the primitive is replaced by a plain Python object: a plain
lock would let lines interleave, a plain counter would lose updates (or stay at
zero in the parent), a plain queue would never reach the consumer.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest

import manycore as mc
from conftest import BACKENDS, PROCESS_BACKENDS
from faulty import bump, consume, limited, locked_write, produce, unsafe_bump
from helpers import manycore_segments
from stdlibfns import put_large

CONCURRENT = [p for p in BACKENDS if p.values[0][0] != "serial"]


@pytest.fixture(params=CONCURRENT)
def pool4(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    name, method = request.param
    with mc.Pool(4, backend=name, start_method=method) as p:
        yield p


def test_lock_around_printing(pool4: mc.Pool, tmp_path: Path) -> None:
    lock = mc.Lock()
    path = str(tmp_path / "log.txt")
    pool4.map(locked_write, [(lock, path, i) for i in range(24)], chunksize=1)
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 48
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        assert start.startswith("start ") and end == "end " + start.split()[1]
    assert not lock.locked()


def test_semaphore_limits_concurrency_to_two(pool4: mc.Pool) -> None:
    sem = mc.Semaphore(2)
    inside = mc.Counter()
    peaks = pool4.map(limited, [(sem, inside, i) for i in range(16)], chunksize=1)
    assert max(peaks) == 2  # 4 workers, but never more than 2 inside at once
    assert inside.value == 0 and sem.get_value() == 2


def test_producer_consumer_queue(pool4: mc.Pool) -> None:
    q = mc.Queue()
    consumers = [pool4.submit(consume, (q, 50)) for _ in range(2)]
    producers = [pool4.submit(produce, (q, lo, lo + 50)) for lo in (0, 50)]
    assert [f.result(timeout=60) for f in producers] == [50, 50]
    got = sorted(i for f in consumers for i in f.result(timeout=60))
    assert got == list(range(100))  # every item once, none lost or doubled
    assert q.empty()


def test_shared_counter_loses_no_update(pool4: mc.Pool) -> None:
    counter = mc.Counter()
    pool4.map(bump, [(counter, 500)] * 8, chunksize=1)
    assert counter.value == 4000


def test_value_without_its_lock_is_shared_memory(pool4: mc.Pool) -> None:
    value = mc.Value("q", 0)
    pool4.map(unsafe_bump, [(value, 100)] * 4, chunksize=1)
    # The workers wrote to the same memory as this process sees (without the lock,
    # their read-modify-write sequences can undo each other: any total may come out).
    assert 1 <= value.value <= 400
    with value.get_lock():
        value.value = 7
    assert value.value == 7


def test_queue_in_this_process() -> None:
    q = mc.Queue(maxsize=2)
    q.put(1)
    q.put(2)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert q.qsize() == 2 and q.full()
    assert [q.get(), q.get()] == [1, 2]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)


def test_queue_item_larger_than_the_pipe() -> None:
    # A put larger than the pipe's buffer completes as a consumer reads it.
    q = mc.Queue()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    reader.start()
    q.put({"big": "x" * (3 << 20)})
    reader.join(30)
    assert len(got[0]["big"]) == 3 << 20  # type: ignore[index]


def test_semaphore_and_value_basics() -> None:
    sem = mc.Semaphore(1)
    assert sem.acquire() and not sem.acquire(timeout=0.01)
    sem.release()
    lock = mc.Lock()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    assert mc.Value("d", 1.5).value == 1.5
    assert mc.Counter(5).increment(3) == 8
    with pytest.raises(ValueError, match="typecode"):
        mc.Value("not a code")
    with pytest.raises(ValueError, match="Semaphore value"):
        mc.Semaphore(-1)
    with pytest.raises(ValueError, match="maxsize"):
        mc.Queue(maxsize=-1)


def test_names_are_removed_with_the_objects() -> None:
    import gc

    def ours() -> set[str]:
        return manycore_segments()

    before = ours()
    objects = [mc.Lock(), mc.Semaphore(3), mc.Counter(), mc.Value("d"), mc.Queue()]
    assert len(ours() - before) >= 4
    del objects
    gc.collect()
    assert ours() - before == set()


def _get_one(q: mc.Queue) -> object:
    return q.get(timeout=5)


def test_queue_full_honours_timeouts() -> None:
    import time

    q = mc.Queue()
    for i in range(256):  # the pipe's 1 MB, in 4 KB records
        q.put_nowait(i)
    with pytest.raises(queue.Full):
        q.put_nowait("one more")
    started = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("one more", timeout=0.1)
    assert 0.09 <= time.monotonic() - started < 2
    assert [q.get() for _ in range(256)] == list(range(256))


def test_a_killed_consumer_does_not_wedge_the_queue() -> None:
    from faulty import hang_on

    q = mc.Queue()
    with mc.Pool(1, timeout=0.3) as pool:
        # A task blocked in get() is killed by its timeout...
        with pytest.raises(mc.TaskTimeout):
            pool.submit(_get_one, q).result(timeout=30)
        # ...and the queue still works for everyone.
        q.put("still fine")
        assert pool.submit(_get_one, q).result(timeout=30) == "still fine"
        assert pool.submit(hang_on, 1).result(timeout=30) == 10


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_large_items_outlive_the_workers_that_put_them(backend: tuple[str, str]) -> None:
    # A large item waits in a shared-memory segment: the pool removes a finished
    # worker's segments (replaced here after each item, then closed), not these.
    q = mc.Queue()
    with mc.Pool(2, start_method=backend[1], max_tasks_per_worker=1) as pool:
        assert pool.map(put_large, [(q, i) for i in range(4)], chunksize=1) == [0, 1, 2, 3]
    got = sorted(q.get(timeout=10) for _ in range(4))
    assert got == [(i, bytes(100_000)) for i in range(4)]
