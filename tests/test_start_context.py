"""A worker inherits the parent's environment, working directory and ``sys.path``
as they are when it starts, whatever the start method: a fork server started
earlier must not hand out its own stale copies."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import manycore as mc
from conftest import PROCESS_BACKENDS


def _probe(name: str) -> tuple[str | None, str, bool]:
    import importlib.util

    return (os.environ.get(name), os.getcwd(), importlib.util.find_spec("mc_probe_mod") is not None)


@pytest.fixture(params=PROCESS_BACKENDS)
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param[1])


def test_the_default_start_method_is_the_fork_server_on_linux() -> None:
    from manycore._engine import default_start_method

    expected = "forkserver" if sys.platform.startswith("linux") else "spawn"
    assert default_start_method() == expected


def test_a_worker_sees_the_parent_as_it_is_when_the_worker_starts(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MC_PROBE_GONE", "old")
    with mc.Pool(1, start_method=method) as pool:  # a fork server, if any, starts now
        assert pool.submit(_probe, "MC_PROBE_GONE").result(timeout=60)[0] == "old"
    (tmp_path / "mc_probe_mod.py").write_text("X = 1\n")
    monkeypatch.delenv("MC_PROBE_GONE")
    monkeypatch.setenv("MC_PROBE_NEW", "new")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with mc.Pool(1, start_method=method) as pool:
        assert pool.submit(_probe, "MC_PROBE_NEW").result(timeout=60) == (
            "new",
            str(tmp_path),
            True,
        )
        assert pool.submit(_probe, "MC_PROBE_GONE").result(timeout=60)[0] is None


def test_a_removed_working_directory_does_not_stop_a_worker(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with mc.Pool(1, start_method=method) as pool:
        assert pool.submit(abs, -3).result(timeout=60) == 3


def _signal_state() -> tuple[bool, int]:
    import signal

    return signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL, signal.set_wakeup_fd(-1)


def test_a_worker_starts_with_the_default_child_signal_and_no_wakeup_fd(method: str) -> None:
    # The fork server listens for its children's ends; its workers must not
    # inherit that (their own subprocesses and event loops rely on the default).
    with mc.Pool(1, start_method=method) as pool:
        assert pool.submit(_signal_state).result(timeout=60) == (True, -1)


_BIG = """
import os, signal, sys
import manycore as mc
with mc.Pool(1, start_method="forkserver") as pool:  # the server is up
    pool.submit(abs, -1).result(timeout=60)
os.environ["MC_PROBE_BIG"] = "x" * 4_000_000
alarms = []
signal.signal(signal.SIGALRM, lambda *_: alarms.append(1))
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
with mc.Pool(2, start_method="forkserver") as pool:
    got = pool.submit(os.environ.get, "MC_PROBE_BIG").result(timeout=60)
signal.setitimer(signal.ITIMER_REAL, 0)
print(len(got), bool(alarms))
"""


def test_a_large_environment_reaches_a_served_worker_under_a_stream_of_signals() -> None:
    # A signal handler interrupting one large send could leave part of the
    # request unsent, and the server waiting for the rest forever. In a fresh
    # interpreter (SIGALRM is pytest-timeout's here), bounded by the run's timeout.
    if "forkserver" not in mc.START_METHODS:
        pytest.skip("no fork server here")
    assert _run(_BIG).split() == ["4000000", "True"]


def _run(script: str, *args: str) -> str:
    import subprocess

    src = str(Path(mc.__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    try:
        out = subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=45,  # under pytest-timeout's 60 s: a hang fails here, with its output
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"hung: {hung.stderr!r:.2000}") from None
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


_LATER = """
import os, sys
import manycore as mc
later = sys.argv[2]
sys.path.insert(0, later)  # missing when the pool (and a fork server) starts
with mc.Pool(1, start_method=sys.argv[1]) as pool:
    pool.submit(abs, -1).result(timeout=60)
os.makedirs(later)
with open(os.path.join(later, "mc_later_mod.py"), "w") as f:
    f.write("X = 42\\n")
__import__("importlib").invalidate_caches()  # as Python asks of a module made at run time
with mc.Pool(1, start_method=sys.argv[1]) as pool:
    print(pool.submit(eval, "__import__('mc_later_mod').X").result(timeout=60))
"""


def test_a_folder_made_after_the_first_pool_is_importable_in_a_worker(
    method: str, tmp_path: Path
) -> None:
    # A fresh interpreter: its fork server boots with the folder on sys.path but
    # missing, and must not keep "nothing here" for it.
    assert _run(_LATER, method, str(tmp_path / "later")).strip() == "42"
