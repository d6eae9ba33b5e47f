"""A worker's cache of argument-segment mappings (no processes needed)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest

from manycore._transport import _shm
from manycore._transport._mapcache import Mappings, in_use

np = pytest.importorskip("numpy")

pytestmark = pytest.mark.skipif(not _shm.available(), reason="needs POSIX shared memory")

MB = 1 << 20


@pytest.fixture
def segments() -> Iterator[list[_shm.Segment]]:
    made = [_shm.Segment.create(MB) for _ in range(4)]
    yield made
    for seg in made:
        seg.unlink()
        seg.close()


def test_a_segment_given_back_is_the_same_mapping_next_time(segments: list[_shm.Segment]) -> None:
    cache = Mappings()
    first = cache.take(segments[0].name)
    assert cache.give(first) is True
    assert cache.take(segments[0].name) is first
    cache.give(first)
    cache.clear()
    assert len(cache) == 0


def test_a_task_that_keeps_an_array_takes_the_mapping_out(segments: list[_shm.Segment]) -> None:
    src = np.arange(MB // 8, dtype=np.float64)
    bufs: list[pickle.PickleBuffer] = []
    data = pickle.dumps(src, 5, buffer_callback=bufs.append)
    spans, _ = _shm.layout([b.raw() for b in bufs])
    _shm.pack([b.raw() for b in bufs], segments[0])
    cache = Mappings()
    seg = cache.take(segments[0].name)
    kept = pickle.loads(data, buffers=_shm.views(seg, spans))[10:20]
    assert in_use(seg)
    assert cache.give(seg) is False  # the parent must not reuse it
    assert len(cache) == 0
    assert (kept == np.arange(10.0, 20.0)).all()  # still mapped for the array
    seg2 = cache.take(segments[0].name)
    assert seg2 is not seg
    arr = pickle.loads(data, buffers=_shm.views(seg2, spans))
    assert float(arr.sum()) == float(src.sum())
    del arr
    assert not in_use(seg2)
    assert cache.give(seg2) is True


def test_sweep_unmaps_segments_the_parent_removed(segments: list[_shm.Segment]) -> None:
    cache = Mappings()
    for seg in segments[:2]:
        cache.give(cache.take(seg.name))
    assert len(cache) == 2
    segments[0].unlink()
    cache.sweep()
    assert len(cache) == 1
    gone = cache.take(segments[1].name)
    assert not gone.map.closed
    cache.give(gone)
    segments[1].unlink()
    cache.sweep()
    assert len(cache) == 0 and gone.map.closed


def test_the_cache_is_bounded(segments: list[_shm.Segment]) -> None:
    cache = Mappings(max_count=2, max_bytes=64 * MB)
    taken = [cache.take(seg.name) for seg in segments]
    for seg in taken:
        cache.give(seg)
    assert len(cache) == 2
    assert [s.map.closed for s in taken] == [True, True, False, False]  # oldest first
    by_bytes = Mappings(max_count=8, max_bytes=2 * MB)
    for seg in segments:
        by_bytes.give(by_bytes.take(seg.name))
    assert len(by_bytes) == 2
    cache.clear()
    by_bytes.clear()


def test_a_name_that_is_not_ours_is_refused() -> None:
    with pytest.raises(ValueError, match="not a manycore segment"):
        Mappings().take("someone-else")
