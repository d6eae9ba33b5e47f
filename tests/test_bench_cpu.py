"""The bench's CPU column (the CPU time of the process tree) and its ranking verdicts."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from manycore._cli._bench.cpu import tree_cpu
from manycore._cli._bench.measure import Row, Workload
from manycore._cli._bench.targets import rank_row

pytest.importorskip("psutil")

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def burner(seconds: float, then_sleep: float = 0.0) -> subprocess.Popen[bytes]:
    code = BURN.format(s=seconds) + f"time.sleep({then_sleep})\n"
    return subprocess.Popen([sys.executable, "-c", code])


def spend(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.timeout(30)
def test_a_living_child_counts_to_the_nanosecond_clock() -> None:
    before = tree_cpu()
    child = burner(0.3, then_sleep=30)
    try:
        spend(0.1)
        while child.poll() is None and tree_cpu() - before < 0.35:  # type: ignore[operator]
            pass
        after = tree_cpu()
    finally:
        child.kill()
        child.wait()
    assert before is not None and after is not None
    assert 0.35 <= after - before < 1.5  # 0.1 here + 0.3 there + the child's start-up


@pytest.mark.timeout(30)
def test_a_child_reaped_in_between_still_counts() -> None:
    before = tree_cpu()
    burner(0.3).wait(timeout=20)
    after = tree_cpu()
    assert before is not None and after is not None
    assert 0.3 <= after - before < 1.5


@pytest.mark.timeout(30)
def test_a_skipped_child_does_not_count() -> None:
    child = burner(0.4, then_sleep=30)
    try:
        before = tree_cpu(skip={child.pid})
        spend(0.05)
        with_child = tree_cpu()
        while tree_cpu() - with_child < 0.2:  # type: ignore[operator]
            pass  # the child burns meanwhile
        after = tree_cpu(skip={child.pid})
    finally:
        child.kill()
        child.wait()
    assert before is not None and after is not None
    spent = after - before
    assert 0.05 <= spent < 0.2 + 0.2  # this process only (its own loop included)


def test_sampling_costs_are_left_out() -> None:
    first = tree_cpu()
    for _ in range(50):
        tree_cpu()
    assert first is not None
    assert tree_cpu() - first < 0.005  # type: ignore[operator]


def workload(**rows: list[float]) -> Workload:
    return Workload("g", "uneven", [Row(name, times) for name, times in rows.items()])


def verdict(w: Workload) -> str:
    row = rank_row(w)
    assert row is not None
    return row[-1]


def test_ranking_first_tied_behind() -> None:
    mine, peer = "manycore Pool", "pebble"
    assert verdict(workload(**{mine: [1.0, 1.1, 1.2], peer: [1.3, 1.4, 1.5]})) == "**first**"
    tied = workload(**{mine: [1.3, 1.35, 1.4], peer: [1.0, 1.2, 1.5]})
    assert verdict(tied).startswith("**tied**")
    assert verdict(workload(**{mine: [2.0, 2.1, 2.2], peer: [1.0, 1.1, 1.2]})) == "behind"


def test_ranking_takes_manycores_best_row_and_ignores_the_loop() -> None:
    w = workload(
        **{
            "sequential loop": [0.1, 0.1],
            "manycore mc.map": [3.0, 3.0],
            "manycore Pool": [1.0, 1.0],
            "mpire": [2.0, 2.0],
        }
    )
    row = rank_row(w)
    assert row is not None and row[1] == "manycore Pool" and row[3] == "mpire"
    assert rank_row(workload(**{"manycore Pool": [1.0]})) is None  # no peer ran
