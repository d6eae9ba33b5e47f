"""checkpoint=: finished items kept in an SQLite file; a run killed half-way (even
by SIGKILL) resumes to the exact full result, computing nothing twice that was
stored; a changed function or input is refused unless resume="force"."""

from __future__ import annotations

import collections
import functools
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import ckptfns
import manycore as mc
from manycore._scheduler._checkpoint import read_checkpoint
from manycore._scheduler._fingerprint import fingerprint, input_digests


def stored_indices(path: Path) -> list[int]:
    """The indices the file holds, read as another process would."""
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=5)
    try:
        return [row[0] for row in db.execute("SELECT idx FROM items ORDER BY idx")]
    except sqlite3.OperationalError:  # the tables are not made yet
        return []
    finally:
        db.close()


def make(source: str, name: str = "work") -> Any:
    """A function ``name`` of a module "userlib", compiled from ``source``: the
    same name with other code, as after an edit of the user's file."""
    namespace: dict[str, Any] = {"__name__": "userlib"}
    exec(textwrap.dedent(source), namespace)
    return namespace[name]


# ----------------------------------------------------------------- the kill test

KILLED_RUN = """
import functools, sys
import ckptfns
import manycore as mc
fn = functools.partial(ckptfns.logged_square, log=sys.argv[1], delay=0.02)
mc.map(fn, range(int(sys.argv[3])), checkpoint=sys.argv[2], workers=2)
print("finished")
"""


def test_sigkill_half_way_then_resume_to_the_exact_result(tmp_path: Path) -> None:
    n = 150
    path, log = tmp_path / "run.sqlite", str(tmp_path / "calls.log")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, log, str(path), str(n)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 40
        while len(stored_indices(path)) < 20:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no rows stored in time"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        out, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL and b"finished" not in out
    before = stored_indices(path)  # what the killed run committed
    assert 20 <= len(before) < n, len(before)

    # The same call again (on threads here: the file does not care which backend).
    fn = functools.partial(ckptfns.logged_square, log=log, delay=0.02)
    assert mc.map(fn, range(n), checkpoint=path, backend="threads", workers=4) == [
        x * x for x in range(n)
    ]
    calls = collections.Counter(ckptfns.logged_calls(log))
    assert set(calls) == set(range(n))  # every item was computed
    assert [i for i in before if calls[i] != 1] == []  # nothing stored was computed again
    assert stored_indices(path) == list(range(n))


# ------------------------------------------------------------ on every backend


def test_resume_on_every_backend(backend: tuple[str, str | None], tmp_path: Path) -> None:
    name, method = backend
    path, log = tmp_path / "run.sqlite", str(tmp_path / "calls.log")
    fn = functools.partial(ckptfns.logged_square, log=log)
    fails = functools.partial(ckptfns.fails_on_3s, log=log)
    with mc.Pool(2, backend=name, start_method=method) as pool:
        assert pool.map(fn, range(30), checkpoint=path) == [x * x for x in range(30)]
        # A longer input: the first 30 are done, only the rest is computed.
        assert pool.map(fn, range(50), checkpoint=str(path)) == [x * x for x in range(50)]
        assert pool.map(fn, range(50), checkpoint=path, ordered=False) == [x * x for x in range(50)]
        assert sorted(ckptfns.logged_calls(log)) == list(range(50))
        # Failures are stored with the traceback of where they ran.
        out = pool.map(fails, range(10), checkpoint=tmp_path / "f.sqlite", on_error="collect")
    assert [x.index for x in out if isinstance(x, mc.Failure)] == [3, 8]
    assert out[3].input == 3 and isinstance(out[3].exception, ValueError)
    held = read_checkpoint(tmp_path / "f.sqlite")
    assert sorted(held) == list(range(10)) and held[4] == 40
    assert isinstance(held[8], mc.Failure) and str(held[8].exception) == "bad input 8"
    assert "fails_on_3s" in held[8].traceback and "bad input 8" in held[8].traceback


def test_asyncio_backend(tmp_path: Path) -> None:
    log = str(tmp_path / "calls.log")
    fn = functools.partial(ckptfns.async_logged_square, log=log)
    path = tmp_path / "run.sqlite"
    for n in (5, 12):
        got = mc.map(fn, range(n), checkpoint=path, backend="asyncio")
        assert got == [x * x for x in range(n)]
    assert sorted(ckptfns.logged_calls(log)) == list(range(12))


def test_starmap_and_generators(tmp_path: Path) -> None:
    path = tmp_path / "star.sqlite"
    pairs = [(b, 2) for b in range(8)]
    assert mc.starmap(ckptfns.power, pairs, checkpoint=path, backend="threads") == [
        b * b for b in range(8)
    ]
    with mc.Pool(2, backend="threads") as pool:
        # The same inputs, now from a generator: all done, the index is the position.
        assert pool.starmap(ckptfns.power, iter(pairs), checkpoint=path) == [
            b * b for b in range(8)
        ]
        # map(fn, a, b) zips: a map over pairs of arguments, like starmap, but
        # starmap and map do not share a file.
        with pytest.raises(mc.CheckpointMismatch, match="map became starmap"):
            pool.map(ckptfns.power, range(8), [2] * 8, checkpoint=path)
        log = str(tmp_path / "calls.log")
        fn = functools.partial(ckptfns.logged_square, log=log)
        gen_path = tmp_path / "gen.sqlite"
        assert pool.map(fn, (x for x in range(7)), checkpoint=gen_path) == [x * x for x in range(7)]
        assert pool.map(fn, (x for x in range(9)), checkpoint=gen_path) == [x * x for x in range(9)]
    assert sorted(ckptfns.logged_calls(log)) == list(range(9))


def test_values_come_back_exactly(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    path = tmp_path / "arrays.sqlite"
    items = [np.arange(n, dtype=np.float32).reshape(-1, 1) for n in range(1, 5)]
    first = mc.map(np.transpose, items, checkpoint=path, backend="threads")
    again = mc.map(np.transpose, items, checkpoint=path, backend="threads")
    for a, b in zip(first, again, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()
    values = [1, 2.5, "s", b"b", None, (1, [2]), {"k": {3}}, 10**30]
    assert mc.map(ckptfns.lock_on_2, values, checkpoint=tmp_path / "v.sqlite") == values
    assert list(read_checkpoint(tmp_path / "v.sqlite").values()) == values


# ------------------------------------------------------ what changed is refused


def test_changed_function_is_refused_then_forced(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    old = make("def work(x):\n    return x + 1\n")
    new = make("def work(x):\n    return x + 2\n")
    assert mc.map(old, range(10), checkpoint=path, backend="serial") == list(range(1, 11))
    with pytest.raises(mc.CheckpointMismatch) as info:
        mc.map(new, range(10), checkpoint=path, backend="serial")
    message = str(info.value)
    assert "'userlib.work'" in message and str(path) in message and info.value.path == str(path)
    assert 'resume="force"' in message and "resume=False" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, mc.ManycoreError)
    # Forced: the stored results are kept, only new items run with the new code.
    forced = mc.map(new, range(12), checkpoint=path, backend="serial", resume="force")
    assert forced == [*range(1, 11), 12, 13]
    # The file now belongs to the new function.
    assert mc.map(new, range(12), checkpoint=path, backend="serial") == forced
    # Another function altogether is named as such.
    other = make("def other(x):\n    return x\n", "other")
    with pytest.raises(mc.CheckpointMismatch, match=r"'userlib\.work', not of 'userlib\.other'"):
        mc.map(other, range(12), checkpoint=path, backend="serial")
    # resume=False starts over: everything is computed again.
    assert mc.map(new, range(12), checkpoint=path, backend="serial", resume=False) == [
        x + 2 for x in range(12)
    ]


def test_changed_input_is_refused_then_only_it_recomputed(tmp_path: Path) -> None:
    path, log = tmp_path / "run.sqlite", str(tmp_path / "calls.log")
    fn = functools.partial(ckptfns.logged_square, log=log)
    items = list(range(20))
    mc.map(fn, items, checkpoint=path, backend="threads")
    items[7] = 100
    with pytest.raises(mc.CheckpointMismatch, match=r"input item 7 but|input item 7,"):
        mc.map(fn, items, checkpoint=path, backend="threads")
    items[17] = 200
    with pytest.raises(mc.CheckpointMismatch, match=r"input item 7 \(and 1 more\)"):
        mc.map(fn, items, checkpoint=path, backend="threads")
    assert sorted(ckptfns.logged_calls(log)) == list(range(20))  # refused before any work
    got = mc.map(fn, items, checkpoint=path, backend="threads", resume="force")
    assert got == [x * x for x in items]
    assert sorted(ckptfns.logged_calls(log)[20:]) == [100, 200]
    # resume=False computes everything again.
    assert mc.map(fn, items, checkpoint=path, backend="threads", resume=False) == got
    assert len(ckptfns.logged_calls(log)) == 42


def test_fingerprint_follows_the_code() -> None:
    base = make("def work(x, k=1):\n    return x + k\n")
    same = make("\n\n\ndef work(x, k=1):\n    return x + k\n")  # other line numbers
    assert fingerprint(base, False) == fingerprint(same, False)
    assert fingerprint(base, False) != fingerprint(base, True)  # map vs starmap
    for changed in (
        "def work(x, k=1):\n    return x + k + 0.5\n",  # a constant
        "def work(x, k=2):\n    return x + k\n",  # a default
        "def work(x, k=1):\n    return x - k\n",  # the bytecode
        "def work(x, k=1):\n    return [y + k for y in [x]][0]\n",  # nested code
    ):
        assert fingerprint(make(changed), False) != fingerprint(base, False), changed
    # A helper of the same module; a closure; a partial's arguments.
    helper = "def work(x):\n    return helper(x)\ndef helper(x):\n    return x + {}\n"
    assert fingerprint(make(helper.format(1)), False) != fingerprint(make(helper.format(2)), False)
    adder = "def make(k):\n    def work(x):\n        return x + k\n    return work\n"
    assert fingerprint(make(adder, "make")(1), False) != fingerprint(make(adder, "make")(2), False)
    one = functools.partial(ckptfns.power, exp=2)
    assert fingerprint(one, False) == fingerprint(functools.partial(ckptfns.power, exp=2), False)
    assert fingerprint(one, False) != fingerprint(functools.partial(ckptfns.power, exp=3), False)
    # Through a functools.cache wrapper, and a class called per item (its methods).
    cached = "import functools\n@functools.cache\ndef work(x):\n    return x * {}\n"
    assert fingerprint(make(cached.format(2)), False) != fingerprint(make(cached.format(3)), False)
    klass = "class work:\n    def __init__(self, x):\n        self.v = x * {}\n"
    assert fingerprint(make(klass.format(2)), False) != fingerprint(make(klass.format(3)), False)


# Sets of strings pickle in an order that PYTHONHASHSEED changes.
ITEMS = ["x", 10**6, (1, "a"), {"alpha", "beta", "gamma", "delta"}, [{"k": frozenset("xyzw")}]]


def test_fingerprints_are_the_same_in_another_process() -> None:
    code = (
        f"ITEMS = {ITEMS!r}; "
        "import ckptfns; from manycore._scheduler._fingerprint import fingerprint, input_digests; "
        "print(fingerprint(ckptfns.in_set, False), input_digests(ITEMS))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    here = f"{fingerprint(ckptfns.in_set, False)} {input_digests(ITEMS)}\n"
    assert outs == {here}


# -------------------------------------------------------------------- failures


def test_failures_are_stored_and_each_policy_applies(tmp_path: Path) -> None:
    log = str(tmp_path / "calls.log")
    fn = functools.partial(ckptfns.fails_on_3s, log=log)
    expected = [x * 10 for x in range(12)]
    with mc.Pool(2, backend="threads") as pool:
        skipped = pool.map(fn, range(12), checkpoint=tmp_path / "s.sqlite", on_error="skip")
        assert skipped == [v for i, v in enumerate(expected) if i % 5 != 3]
        # "raise": every item is run and stored, then the first failure is raised.
        with pytest.raises(ValueError, match="bad input 3") as info:
            pool.map(fn, range(12), checkpoint=tmp_path / "r.sqlite")
        assert "manycore: raised while processing input item 3" in info.value.__notes__
        held = read_checkpoint(tmp_path / "r.sqlite")
        assert sorted(held) == list(range(12))
        assert [i for i, v in held.items() if isinstance(v, mc.Failure)] == [3, 8]


def test_stored_failures_are_computed_again_on_resume(tmp_path: Path) -> None:
    log, marks = str(tmp_path / "calls.log"), tmp_path / "marks"
    marks.mkdir()
    fn = functools.partial(ckptfns.fails_once, log=log, marks=str(marks))
    path = tmp_path / "run.sqlite"
    with mc.Pool(2, backend="threads") as pool:
        first = pool.map(fn, range(10), checkpoint=path, on_error="collect")
        assert [x.index for x in first if isinstance(x, mc.Failure)] == [3, 8]
        assert pool.map(fn, range(10), checkpoint=path) == [x * 10 for x in range(10)]
        assert sorted(ckptfns.logged_calls(log)[10:]) == [3, 8]  # only the failures ran
        # With retries, only an item's final outcome is stored.
        other = tmp_path / "retried.sqlite"
        for mark in marks.iterdir():
            mark.unlink()
        assert pool.map(fn, range(10), checkpoint=other, retries=1) == [x * 10 for x in range(10)]
    assert not any(isinstance(v, mc.Failure) for v in read_checkpoint(other).values())


def test_a_value_that_cannot_be_stored_fails_its_item(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    out = mc.map(
        ckptfns.lock_on_2, range(4), checkpoint=path, backend="threads", on_error="collect"
    )
    assert out[:2] == [0, 1] and out[3] == 3
    failure = out[2]
    assert isinstance(failure, mc.Failure) and failure.index == 2 and failure.input == 2
    assert isinstance(failure.exception, mc.SerializationError)
    assert "input item 2" in str(failure.exception) and "checkpoint" in str(failure.exception)
    assert isinstance(read_checkpoint(path)[2], mc.Failure)


def test_progress_counts_stored_items_as_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from manycore._observe import _progress

    seen: list[tuple[int | None, int]] = []

    class Recorder(_progress.Progress):
        def __init__(self, total: int | None, what: str, on_error: str, initial: int = 0):
            seen.append((total, initial))
            super().__init__(total, what, on_error, initial)

    import manycore._observe as observe  # the door the scheduler reaches it through

    monkeypatch.setattr(observe, "Progress", Recorder)
    path = tmp_path / "run.sqlite"
    mc.map(abs, range(30), checkpoint=path, backend="serial")
    mc.map(abs, range(50), checkpoint=path, backend="serial", progress=True)
    assert seen == [(50, 30)]


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"checkpoint": 3}, TypeError, "checkpoint must be a file path"),
        ({"checkpoint": b"run.sqlite"}, TypeError, "checkpoint must be a file path"),
        ({"checkpoint": ""}, ValueError, "checkpoint='' names no file"),
        ({"resume": "yes"}, ValueError, "resume='yes' is not valid"),
        ({"resume": 1}, ValueError, "resume=1 is not valid"),
        ({"resume": None}, ValueError, "resume=None is not valid"),
        ({"on_error": "ignore"}, ValueError, "on_error='ignore' is not valid"),
    ],
)
def test_bad_arguments_fail_before_any_work(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    options = {"checkpoint": tmp_path / "run.sqlite", **kwargs}
    log = str(tmp_path / "calls.log")
    fn = functools.partial(ckptfns.logged_square, log=log)
    with pytest.raises(error, match=match):
        mc.map(fn, range(3), backend="serial", **options)
    with pytest.raises(error, match=match):
        mc.starmap(ckptfns.power, [(1, 2)], backend="serial", **options)
    with mc.Pool(1, backend="serial") as pool:
        with pytest.raises(error, match=match):
            pool.map(fn, range(3), **options)
        with pytest.raises(error, match=match):
            pool.starmap(ckptfns.power, [(1, 2)], **options)
    assert os.listdir(tmp_path) == []  # no file, no call


def test_a_file_that_is_no_checkpoint_is_never_written(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    with pytest.raises(mc.CheckpointMismatch, match="is not a manycore checkpoint"):
        mc.map(abs, range(3), checkpoint=text, backend="serial", resume=False)
    assert text.read_text() == "not a database\n" * 100
    other = tmp_path / "app.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(mc.CheckpointMismatch, match="other tables"):
        mc.map(abs, range(3), checkpoint=other, backend="serial", resume=False)
    db = sqlite3.connect(other)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
    db.close()
    assert tables == ["users"]
    with pytest.raises(OSError, match="cannot be opened"):
        mc.map(abs, range(3), checkpoint=tmp_path / "no" / "dir.sqlite", backend="serial")


def test_stats_with_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    out, stats = mc.map(abs, range(-5, 5), backend="threads", checkpoint=path, stats=True)
    assert out == [abs(x) for x in range(-5, 5)] and stats.items == 10
    again, stats = mc.map(abs, range(-5, 5), backend="threads", checkpoint=path, stats=True)
    assert again == out and stats.items == 0  # nothing left to compute


def test_a_function_is_named_with_its_module(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    mc.starmap(ckptfns.power, [(1, 2), (2, 2)], backend="threads", checkpoint=path)
    other = make("def power(b, e):\n    return b * e\n", "power")  # module "userlib"
    with pytest.raises(mc.CheckpointMismatch, match=r"'userlib\.power'"):
        mc.starmap(other, [(1, 2), (2, 2)], backend="threads", checkpoint=path)


def _foreign_database(path: Path, wal: bool) -> bytes:
    """Another program's SQLite file (in WAL mode or not); its bytes."""
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('ada')")
    db.commit()
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_a_foreign_database_is_left_byte_for_byte(tmp_path: Path, wal: bool) -> None:
    app = tmp_path / "app.sqlite"
    before = _foreign_database(app, wal)
    for resume in (True, False, "force"):
        with pytest.raises(mc.CheckpointMismatch, match="is not a manycore checkpoint"):
            mc.map(abs, range(3), checkpoint=app, backend="serial", resume=resume)
    with pytest.raises(mc.CheckpointMismatch, match="is not a manycore checkpoint"):
        read_checkpoint(app)
    assert app.read_bytes() == before  # not switched to WAL mode, nothing written
    assert sorted(os.listdir(tmp_path)) == ["app.sqlite"]  # no -wal, no -shm beside it


def test_reading_a_checkpoint_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    mc.map(abs, range(-3, 3), checkpoint=path, backend="serial")
    assert sorted(os.listdir(tmp_path)) == ["run.sqlite"]
    before = path.read_bytes()
    assert read_checkpoint(path) == {i: abs(x) for i, x in enumerate(range(-3, 3))}
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["run.sqlite"]


def test_a_read_only_checkpoint_is_refused_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only file in a folder that can be written: refused before SQLite
    creates its -wal and -shm files, and still readable."""
    path = tmp_path / "run.sqlite"
    mc.map(abs, range(-3, 3), checkpoint=path, backend="serial")
    before = path.read_bytes()
    path.chmod(0o444)
    if os.geteuid() == 0:  # root may write any file: make the check see it as read-only
        real_access = os.access

        def access(name: Any, mode: int, **kw: Any) -> bool:
            if os.fspath(name) == str(path) and mode & os.W_OK:
                return False
            return real_access(name, mode, **kw)

        monkeypatch.setattr(os, "access", access)
    message = rf"checkpoint={str(path)!r} cannot be written \(the file is read-only\)"
    with pytest.raises(PermissionError, match=message):
        mc.map(abs, range(-3, 3), checkpoint=path, backend="serial")
    assert sorted(os.listdir(tmp_path)) == ["run.sqlite"]  # no -wal, no -shm left
    assert read_checkpoint(path) == {i: abs(x) for i, x in enumerate(range(-3, 3))}
    assert sorted(os.listdir(tmp_path)) == ["run.sqlite"]
    assert path.read_bytes() == before


# Pickles as manycore wrote them before its modules moved into layer folders:
# classes and rebuilders named by their flat module of then.
OLD_TIMEOUT = b"cmanycore._errors\nTaskTimeout\n(Vslow\ntR."
OLD_REBUILT_TIMEOUT = b"cmanycore._errors\n_rebuild_timeout\n(Vslow\nF1.5\nI7\ntR."


def test_old_module_paths_in_a_checkpoint_still_load(tmp_path: Path) -> None:
    path, log = tmp_path / "old.sqlite", str(tmp_path / "calls.log")
    fn = functools.partial(ckptfns.logged_square, log=log)
    assert mc.map(fn, range(4), checkpoint=path, backend="serial") == [0, 1, 4, 9]
    old_failure = pickle.dumps((OLD_REBUILT_TIMEOUT, "manycore._errors.TaskTimeout", "slow", "tb"))
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE items SET payload = ? WHERE idx = 2", (OLD_TIMEOUT,))
        db.execute("UPDATE items SET ok = 0, payload = ? WHERE idx = 3", (old_failure,))
    db.close()
    held = read_checkpoint(path)
    assert type(held[2]) is mc.TaskTimeout and str(held[2]) == "slow"
    failure = held[3]
    assert isinstance(failure, mc.Failure) and type(failure.exception) is mc.TaskTimeout
    assert (failure.exception.timeout, failure.exception.index) == (1.5, 7)
    # The resumed run takes item 2's stored value as it is; item 3 (a stored
    # failure) is computed again, as every stored failure is.
    out: list[Any] = mc.map(fn, range(4), checkpoint=path, backend="serial")
    assert out[:2] == [0, 1] and out[3] == 9
    assert type(out[2]) is mc.TaskTimeout and str(out[2]) == "slow"
    assert sorted(ckptfns.logged_calls(log)) == [0, 1, 2, 3, 3]
