"""backend="mpi" against Open MPI, both ways a user runs it: the shared backend
suite under mpiexec and in spawn mode, and a user's script (lambdas, timeouts that stop the task,
a crash failing only its item, retries, worker state) in spawn mode and under
``mpiexec -n 3 python -m mpi4py.futures``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from clusters._mpi_service import (
    HOW,
    ROOT,
    SPAWN_HANG,
    mpi_env,
    mpiexec_mode,
    run,
    spawn_mode,
)
from clusters.conftest import need_command

SCRIPT = Path(__file__).with_name("mpi_script.py")
CASES = ["basics", "timeout", "crash", "retries", "state"]

# The test files whose cases run on the `pool` fixture (tests/conftest.py), which
# takes backend="mpi" with MANYCORE_TEST_MPI=1.
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


PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "mpi", "--timeout", "120"]


def _passed(out: str) -> int:
    found = re.search(r"(\d+) passed", out.strip().splitlines()[-1])
    return 0 if found is None else int(found.group(1))


@pytest.mark.timeout(600)
def test_the_shared_backend_suite_under_mpiexec() -> None:
    """Every case of the pool fixture, in a pytest that is rank 0 of ``mpiexec -n
    3 python -m mpi4py.futures``: each pool's workers are the job's 2 other ranks."""
    mpiexec = need_command("mpiexec", HOW)
    env = mpi_env() | {"MANYCORE_TEST_MPI": "1"}
    files = [str(ROOT / "tests" / name) for name in SHARED_SUITE]
    command = [mpiexec, "-n", "3", sys.executable, "-m", "mpi4py.futures", *PYTEST]
    done = run([*command, *files], timeout=540, env=env)
    assert done.returncode == 0, done.stdout[-8000:]
    assert _passed(done.stdout) >= 60, done.stdout[-2000:]


@pytest.mark.timeout(1200)
def test_the_shared_backend_suite_in_spawn_mode() -> None:
    """Every case of the pool fixture on pools that spawn 2 ranks each: a pytest
    per file (MPI stays in a process once started). Open MPI 4.1 with an external
    PMIx (Debian's) hangs in MPI_Comm_spawn now and then (open-mpi/ompi#9713,
    openpmix#2735), and the process can spawn no more: the pool says so within
    its boot timeout, and that file runs again in a fresh process (twice at most)."""
    env = mpi_env() | {"MANYCORE_TEST_MPI": "1", "MANYCORE_MPI_BOOT_TIMEOUT": "20"}
    total = 0
    for name in SHARED_SUITE:
        command = [sys.executable, *PYTEST, "-x", str(ROOT / "tests" / name)]
        for _attempt in range(3):
            done = run(command, timeout=150, env=env)
            if done.returncode == 0 or SPAWN_HANG not in done.stdout:
                break
        assert done.returncode == 0, done.stdout[-8000:]  # (-9: killed past its time)
        total += _passed(done.stdout)
    assert total >= 60, total


@pytest.mark.timeout(240)
def test_a_script_in_spawn_mode(tmp_path: Path) -> None:
    out = spawn_mode(SCRIPT, ",".join(CASES), str(tmp_path))
    assert [line for line in out.splitlines() if line.startswith("OK ")] == [
        f"OK {case}" for case in CASES
    ], out


@pytest.mark.timeout(240)
def test_a_script_under_mpiexec(tmp_path: Path) -> None:
    out = mpiexec_mode(SCRIPT, ",".join(CASES), str(tmp_path), ranks=3)
    assert [line for line in out.splitlines() if line.startswith("OK ")] == [
        f"OK {case}" for case in CASES
    ], out
