"""The fault suite's guard: after each test, no process, fd or segment leaked."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import psutil
import pytest

import manycore as mc
from helpers import manycore_segments


def _fds() -> set[int]:
    return (
        {int(name) for name in os.listdir("/proc/self/fd")}
        if os.path.isdir("/proc/self/fd")
        else set()
    )


def _shm() -> set[str]:
    return manycore_segments()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every pool a test makes is closed by it; then nothing of ours may remain:
    no child process (running or zombie), no new file descriptor, no segment."""
    mc.shutdown_default_pools()
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    fds_before = _fds()
    shm_before = _shm()
    yield
    mc.shutdown_default_pools()
    from manycore._engine import _forkserver

    deadline = time.monotonic() + 10
    while True:
        # The fork server (start_method="forkserver") stays for the process's life.
        keep = children_before | {_forkserver.server_pid()}
        left = [p for p in me.children(recursive=True) if p.pid not in keep]
        fds = _fds() - fds_before - {_forkserver.server_fd()}
        if (not left and not fds) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"child processes left behind: {[(p.pid, p.status()) for p in left]}"
    assert not fds, f"file descriptors leaked: {sorted(fds)}"
    assert _shm() <= shm_before, "shared-memory segments leaked"
