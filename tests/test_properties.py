"""Property: parallel map equals the built-in map for any input and chunk size."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import manycore as mc
from helpers import square

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
inputs = st.lists(st.integers(min_value=-(10**12), max_value=10**12), max_size=300)
chunks = st.one_of(st.none(), st.integers(min_value=1, max_value=64))


@SETTINGS
@given(xs=inputs, chunksize=chunks)
def test_ordered_map_equals_builtin(
    shared_pool: mc.Pool, xs: list[int], chunksize: int | None
) -> None:
    assert shared_pool.map(square, xs, chunksize=chunksize) == list(map(square, xs))


@SETTINGS
@given(xs=inputs, chunksize=chunks)
def test_unordered_map_is_a_permutation(
    shared_pool: mc.Pool, xs: list[int], chunksize: int | None
) -> None:
    out = shared_pool.map(square, xs, chunksize=chunksize, ordered=False)
    assert Counter(out) == Counter(map(square, xs))


@SETTINGS
@given(xs=inputs, chunksize=chunks)
def test_imap_over_a_generator_equals_builtin(
    shared_pool: mc.Pool, xs: list[int], chunksize: int | None
) -> None:
    assert list(shared_pool.imap(square, iter(xs), chunksize=chunksize)) == list(map(square, xs))
