"""The prefetch policy (what a busy worker may have queued behind its running
batch), decided without processes."""

from __future__ import annotations

from manycore._engine._prefetch import Prefetch


def test_unknown_function_is_never_queued_behind() -> None:
    policy = Prefetch()
    assert not policy.may_queue_behind(1, 1)
    assert policy.estimate(1, 3) is None


def test_short_batches_are_queued_behind_long_ones_are_not() -> None:
    policy = Prefetch(round_trip=0.0005)  # limit: 100 round trips = 50 ms
    policy.observe(1, 100, 0.02)  # 0.2 ms an item
    policy.observe(2, 1, 0.5)  # half a second an item (case (c) of the benchmarks)
    assert policy.may_queue_behind(1, 100)
    assert not policy.may_queue_behind(1, 1000)  # 200 ms of it
    assert not policy.may_queue_behind(2, 1)


def test_limit_follows_the_round_trip_within_bounds() -> None:
    policy = Prefetch(ratio=100, floor=0.005, ceiling=0.1, round_trip=0.0005)
    assert policy.limit() == 0.05
    for _ in range(50):
        policy.observe_round_trip(0.01)  # a loaded parent
    assert policy.limit() == 0.1
    for _ in range(50):
        policy.observe_round_trip(0.0)
    assert policy.limit() == 0.005
    policy.observe_round_trip(-1.0)  # a clock oddity is ignored
    assert policy.limit() == 0.005


def test_a_function_that_turns_slow_stops_being_queued_behind_at_once() -> None:
    policy = Prefetch(round_trip=0.0005)
    for _ in range(20):
        policy.observe(1, 10, 0.01)
    assert policy.may_queue_behind(1, 10)
    policy.observe(1, 10, 1.0)  # one slow batch
    assert not policy.may_queue_behind(1, 10)
    for _ in range(30):  # fast again: it comes back, gradually
        policy.observe(1, 10, 0.01)
    assert policy.may_queue_behind(1, 10)


def test_empty_batches_teach_nothing_and_the_table_is_bounded() -> None:
    policy = Prefetch()
    policy.observe(1, 0, 5.0)
    assert policy.estimate(1, 1) is None
    for fn_id in range(1000):
        policy.observe(fn_id, 1, 0.001)
    assert len(policy._costs) <= 256
    assert policy.estimate(999, 2) == 0.002
