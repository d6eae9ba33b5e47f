"""backend="ipyparallel" against a cluster started as a user starts one
(``ipcluster start -n 2 --ip=127.0.0.1``), and on a cluster the pool starts and
owns: the shared backend suite, and the fault cases (an item that raises, hangs
past its timeout, ignores the interrupt, kills its engine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clusterfns as cf
import manycore as mc
from clusters import rayfns as fns
from clusters._ipp_service import IPPService, ipp_service, need_ipyparallel
from clusters._ray_service import SRC, TESTS

__all__ = ["ipp_service"]  # (the fixture, imported for pytest)

# The test files whose cases run on the `pool` fixture (tests/conftest.py), which
# takes backend="ipyparallel" on the cluster named by MANYCORE_TEST_IPP.
SHARED_SUITE = [
    "test_map.py",
    "test_errors.py",
    "test_on_error.py",
    "test_progress.py",
    "test_retries.py",
    "test_stats.py",
    "test_submit.py",
    "test_tasks.py",
]


def stubborn_on(x: int, victim: int = 2) -> int:
    """Item ``victim`` ignores SIGINT and sleeps for an hour."""
    import signal

    if x == victim:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(3600)
    return x


def _kinds(out: list[Any]) -> list[object]:
    return [type(x.exception).__name__ if isinstance(x, mc.Failure) else x for x in out]


@pytest.fixture
def pool(ipp_service: IPPService) -> Iterator[mc.Pool]:
    with mc.Pool(backend="ipyparallel", address=str(ipp_service.connection_file)) as p:
        yield p


@pytest.mark.timeout(900)
def test_the_shared_backend_suite(ipp_service: IPPService) -> None:
    env = {**os.environ, "MANYCORE_TEST_IPP": str(ipp_service.connection_file)}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS)])
    files = [str(TESTS / name) for name in SHARED_SUITE]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k"]
    command += ["ipyparallel", "--timeout", "120", *files]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=840)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-8000:]
    found = re.search(r"(\d+) passed", out.strip().splitlines()[-1])
    assert found is not None and int(found.group(1)) >= 60, out[-2000:]


@pytest.mark.timeout(120)
def test_an_existing_cluster_answers(pool: mc.Pool) -> None:
    assert pool.workers == 2
    assert pool.map(cf.square, range(100)) == [x * x for x in range(100)]


@pytest.mark.timeout(120)
def test_errors_keep_their_type_and_retries(pool: mc.Pool, tmp_path: Path) -> None:
    with pytest.raises(fns.Custom, match="item 4") as info:
        pool.map(fns.raise_on, range(8))
    assert type(info.value) is fns.Custom
    assert type(info.value.__cause__).__name__ == "RemoteTraceback"
    assert pool.map(fns.raise_on, range(8), on_error="skip") == [0, 1, 2, 3, 5, 6, 7]
    assert pool.map(fns.fail_first, [str(tmp_path / "m")], retries=1) == ["second try"]
    out = pool.map(fns.fail_first, [str(tmp_path / "n")], retries=0, on_error="collect")
    assert isinstance(out[0], mc.Failure) and type(out[0].exception) is ConnectionError


@pytest.mark.timeout(120)
def test_a_timeout_interrupts_only_the_hung_items(pool: mc.Pool) -> None:
    start = time.monotonic()
    out = pool.map(fns.hang_on, range(20), timeout=2, on_error="collect")
    assert _kinds(out) == ["TaskTimeout" if i in (3, 11) else i for i in range(20)]
    assert time.monotonic() - start < 20
    assert pool.map(fns.square, range(50)) == [x * x for x in range(50)]
    assert pool.map(cf.nap, [0.1] * 4, timeout=5) == [0.1] * 4
    assert pool.workers == 2  # interrupted, not killed


@pytest.mark.timeout(120)
def test_worker_state_shared_objects_and_graphs(ipp_service: IPPService) -> None:
    np = pytest.importorskip("numpy")
    big = np.ones(1 << 18)  # 2 MiB: pushed to the engines once
    address = str(ipp_service.connection_file)
    with mc.Pool(backend="ipyparallel", address=address, init=cf.load_state, init_args=(7,)) as p:
        assert p.map(cf.state_value, range(4)) == [7] * 4
    with mc.Pool(backend="ipyparallel", address=address, shared=big) as p:
        assert p.map(cf.shared_sum, range(3)) == [float(1 << 18)] * 3
        assert p.map(cf.total, [big, big]) == [float(1 << 18)] * 2
        add = mc.task(pool=p)(cf.add)
        assert add(add(1, 2), add(3, 4)).result(timeout=60) == 10


# ------------------------------------------------- a cluster the pool owns


@pytest.mark.timeout(300)
def test_an_owned_cluster_replaces_killed_and_crashed_engines() -> None:
    need_ipyparallel()
    with mc.Pool(backend="ipyparallel", workers=2) as p:
        pids = p.scheduler.backend._owned.pids()  # type: ignore[attr-defined]
        # An item that ignores the interrupt: its engine is killed, and replaced.
        start = time.monotonic()
        out = p.map(stubborn_on, range(6), timeout=2, on_error="collect")
        assert _kinds(out) == [0, 1, "TaskTimeout", 3, 4, 5], out
        assert time.monotonic() - start < 15
        # An item that kills its engine: WorkerCrashed for it alone.
        out = p.map(fns.die_on, range(12), on_error="collect")
        assert _kinds(out) == [*range(5), "WorkerCrashed", *range(6, 12)]
        assert p.map(fns.square, range(10)) == [x * x for x in range(10)]
        deadline = time.monotonic() + 60
        while p.workers < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert p.workers == 2
        assert p.map(fns.square, range(4), timeout=10) == [0, 1, 4, 9]
    import psutil

    assert pids and not [pid for pid in pids if psutil.pid_exists(pid)]
