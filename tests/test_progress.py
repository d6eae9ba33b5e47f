"""progress=True: a tqdm bar on stderr, on every backend."""

from __future__ import annotations

import re

import pytest
from tests import taskfns

import manycore as mc


def fail_on(x: int) -> int:
    if x in (3, 7):
        raise ValueError(f"bad {x}")
    return x


def bar_lines(err: str) -> str:
    return err.replace("\r", "\n")


def test_progress_bar_counts_items(pool: mc.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    assert pool.map(abs, range(-50, 50), progress=True) == [abs(x) for x in range(-50, 50)]
    err = bar_lines(capsys.readouterr().err)
    assert re.search(r"100/100 \[", err), err
    assert "item/s" in err or "s/item" in err


def test_progress_bar_counts_failures(pool: mc.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    out = pool.map(fail_on, range(20), on_error="collect", progress=True)
    assert sum(isinstance(x, mc.Failure) for x in out) == 2
    assert "failed=2" in bar_lines(capsys.readouterr().err)
    kept = pool.map(fail_on, range(20), on_error="skip", progress=True)
    assert len(kept) == 18 and kept[:3] == [0, 1, 2]
    err = bar_lines(capsys.readouterr().err)
    assert "failed=2" in err and "20/20" in err


def test_progress_on_imap_of_unknown_length(capsys: pytest.CaptureFixture[str]) -> None:
    with mc.Pool(2, backend="threads") as pool:
        got = list(pool.imap(abs, (x for x in range(30)), progress=True))
    assert got == list(range(30))
    # An input of unknown length: no total, the bar counts up.
    assert "30item" in bar_lines(capsys.readouterr().err)


def test_no_bar_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert mc.map(abs, [-1, -2], backend="serial") == [1, 2]
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="progress"):
        mc.map(abs, [1], backend="serial", progress=1)


def test_progress_of_a_task_graph(capsys: pytest.CaptureFixture[str]) -> None:
    with mc.Pool(2, backend="threads") as pool:
        add = mc.task(taskfns.add, pool=pool)
        slow = mc.task(taskfns.slow, pool=pool)
        fail = mc.task(taskfns.fail, pool=pool)
        leaves = [slow(x, 0.05) for x in range(6)]
        total = add(add(leaves[0], leaves[1]), leaves[2])
        broken = fail("no")
        _done, not_done = mc.wait([total, broken, pool.submit(abs, -3)], progress=True)
    assert not not_done and total.result() == 0 + 1 + 2
    err = bar_lines(capsys.readouterr().err)
    # Every task behind the futures waited for counts (the leaves they need),
    # the plain submit() future too; the unrelated leaves 3..5 do not.
    assert re.search(r"7/7 \[", err), err
    assert "failed=1" in err and "task" in err


def test_graph_progress_stops_at_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with mc.Pool(1, backend="threads") as pool:
        slow = mc.task(taskfns.slow, pool=pool)
        f = slow(1, 0.5)
        _done, not_done = mc.wait([f], timeout=0.15, progress=True)
        assert not_done == {f}
        assert re.search(r"0/1 \[", bar_lines(capsys.readouterr().err))
        with pytest.raises(TypeError, match="progress"):
            mc.wait([f], progress=1)


def test_progress_on_asyncio(capsys: pytest.CaptureFixture[str]) -> None:
    async def double(x: int) -> int:
        return 2 * x

    assert mc.map(double, range(12), backend="asyncio", progress=True) == [2 * x for x in range(12)]
    assert re.search(r"12/12 \[", bar_lines(capsys.readouterr().err))


def test_progress_label_names_the_bar(pool: mc.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    assert pool.map(abs, range(-5, 5), progress="Downloading") == [abs(x) for x in range(-5, 5)]
    err = bar_lines(capsys.readouterr().err)
    assert re.search(r"Downloading: +100%.*10/10 \[", err), err
    assert "manycore" not in err
    assert list(pool.imap(abs, [-1, -2], progress="Parsing pages")) == [1, 2]
    assert re.search(r"Parsing pages: .*2/2 \[", bar_lines(capsys.readouterr().err))


def test_progress_label_on_the_top_level_calls(capsys: pytest.CaptureFixture[str]) -> None:
    assert mc.map(abs, [-1, -2], backend="threads", progress="Squaring") == [1, 2]
    assert "Squaring: " in bar_lines(capsys.readouterr().err)
    assert mc.map(abs, [-1], backend="threads", progress=True) == [1]
    assert "manycore: " in bar_lines(capsys.readouterr().err)
    with pytest.raises(ValueError, match="progress='' is an empty label"):
        mc.map(abs, [1], backend="serial", progress="")
    with pytest.raises(TypeError, match="progress must be True, False or a label"):
        mc.map(abs, [1], backend="serial", progress=["Downloading"])
