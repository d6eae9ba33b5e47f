"""The bench's (f): cold start in fresh interpreters, its table and its targets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import manycore as mc
from manycore._cli._bench.cold import CHILD_SCRIPT, bench_cold, child_env, run_child
from manycore._cli._bench.measure import Row, Workload
from manycore._cli._bench.report import render
from manycore._cli._bench.runners import FuturesForkserver, ManycorePool
from manycore._cli._bench.tables import cold_table
from manycore._cli._bench.targets import cold_targets, rank_row


@pytest.mark.timeout(60)
def test_a_child_is_a_fresh_process_that_runs_a_thread(tmp_path: Path) -> None:
    script = tmp_path / "cold.py"
    script.write_text(CHILD_SCRIPT)
    figures = run_child(script, ManycorePool.name, 1, child_env())
    assert figures["live_threads"] >= 2  # the main thread and the one that stays alive
    for key in ("first", "first_shutdown", "second", "second_shutdown"):
        assert figures[key] > 0


def test_children_write_bytecode_and_import_this_manycore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", ""]))
    env = child_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env
    root = str(Path(mc.__file__).resolve().parent.parent)
    assert env["PYTHONPATH"].split(os.pathsep) == [root, "/elsewhere"]


@pytest.mark.timeout(60)
def test_bench_cold_fills_the_table_and_both_targets() -> None:
    w = bench_cold(1, 1, [ManycorePool, FuturesForkserver], warm_up_rounds=0)
    for row in w.rows:
        assert not row.note, row.note
        assert len(row.times) == len(row.second) == len(row.extra) == 1
    assert any("Bytecode: manycore's package was" in note for note in w.notes)
    table = "\n".join(cold_table(w))
    assert "| runner | first pool: to first result (median) | min - max | second pool" in table
    assert f"| {FuturesForkserver.name} | " in table
    targets = cold_targets(w)
    assert [t.rule.split(",")[0] for t in targets] == ["first pool", "second pool"]
    assert all(t.passed is not None for t in targets)
    text = render({"f": w}, command="c", origin="o", workers=1, loops_per_ms=1, load="0")
    assert "## (f) cold start" in text and "- Bytecode:" in text


@pytest.mark.timeout(60)
def test_a_failing_child_becomes_the_rows_note() -> None:
    class Unknown(ManycorePool):
        name = "no such runner"

    w = bench_cold(1, 1, [Unknown], warm_up_rounds=0)
    assert w.rows[0].note.startswith("ERROR: the fresh interpreter exited with 1")
    assert cold_table(w)[-1].startswith("| no such runner | ERROR: ")


def cold(**rows: tuple[list[float], list[float]]) -> Workload:
    return Workload(
        "f", "cold", [Row(n, first, second=again) for n, (first, again) in rows.items()]
    )


def test_targets_take_the_fastest_peer_per_pool_and_name_the_safe_one() -> None:
    w = cold(
        **{
            "manycore Pool": ([1.2, 1.2], [0.1, 0.1]),
            "multiprocessing.Pool": ([1.0, 1.0], [1.0, 1.0]),
            FuturesForkserver.name: ([2.0, 2.0], [0.5, 0.5]),
        }
    )
    first, second = cold_targets(w)
    assert first.passed is True and "fastest peer multiprocessing.Pool" in first.detail
    assert f"vs {FuturesForkserver.name} (thread-safe start method)" in first.detail
    assert second.passed is True and f"fastest peer {FuturesForkserver.name}" in second.detail
    slower = cold(**{"manycore Pool": ([1.6], [0.1]), "mpire": ([1.0], [1.0])})
    assert [t.passed for t in cold_targets(slower)] == [False, True]
    row = rank_row(w)  # the ranking takes the first pool
    assert row is not None and row[3] == "multiprocessing.Pool" and row[-1] == "behind"
