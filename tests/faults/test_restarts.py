"""max_tasks_per_worker and max_memory_per_worker: workers replaced, nothing lost."""

from __future__ import annotations

from functools import partial

import pytest

import manycore as mc
from conftest import PROCESS_BACKENDS
from faulty import GOOD, hoard, pid_and, rss


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_max_tasks_per_worker(backend: tuple[str, str]) -> None:
    with mc.Pool(2, start_method=backend[1], max_tasks_per_worker=5) as pool:
        out = pool.map(pid_and, range(60))
        assert [v for _, v in out] == [x * GOOD for x in range(60)]
        per_pid: dict[int, int] = {}
        for pid, _ in out:
            per_pid[pid] = per_pid.get(pid, 0) + 1
        assert max(per_pid.values()) <= 5
        assert len(per_pid) >= 12
        # Chunks larger than the quota are cut where the quota ends.
        out = pool.map(pid_and, range(60), chunksize=20)
        assert [v for _, v in out] == [x * GOOD for x in range(60)]
        assert len(pool.pids()) == 2


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_max_memory_per_worker(backend: tuple[str, str]) -> None:
    with mc.Pool(1, start_method=backend[1]) as probe:
        base = probe.submit(rss).result(timeout=30)
    limit = base + (100 << 20)
    with mc.Pool(1, start_method=backend[1], max_memory_per_worker=limit) as pool:
        # Each item leaks 40 MB: a worker passes the limit on its third item.
        out = pool.map(partial(hoard, megabytes=40), range(8), chunksize=4)
        assert [v for _, v in out] == [x * GOOD for x in range(8)]
        pids = [pid for pid, _ in out]
        assert len(set(pids)) >= 3
        assert all(pids.count(p) <= 3 for p in set(pids))
    with mc.Pool(1, start_method=backend[1], max_memory_per_worker="100 GB") as pool:
        out = pool.map(partial(hoard, megabytes=1), range(8))
        assert len({pid for pid, _ in out}) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_tasks_per_worker": 0}, ValueError, "max_tasks_per_worker must be at least 1"),
        ({"max_tasks_per_worker": 2.5}, TypeError, "max_tasks_per_worker must be a whole"),
        ({"max_memory_per_worker": "lots"}, ValueError, "max_memory_per_worker='lots' is not"),
        ({"max_memory_per_worker": 0}, ValueError, "at least 1 byte"),
        ({"max_memory_per_worker": 1.5}, TypeError, "max_memory_per_worker must be bytes"),
        (
            {"max_tasks_per_worker": 3, "backend": "threads"},
            ValueError,
            "max_tasks_per_worker needs a backend whose workers can be restarted",
        ),
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        mc.Pool(1, **kwargs)  # type: ignore[arg-type]


def test_memory_sizes_in_words() -> None:
    from manycore._api._validate import check_memory

    assert check_memory("512MB", "m") == 512 * 10**6
    assert check_memory("2GiB", "m") == 2 * 2**30
    assert check_memory(" 1.5 kb ", "m") == 1500
    assert check_memory(4096, "m") == 4096
