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
