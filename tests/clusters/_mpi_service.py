"""MPI for the cluster suites: Open MPI's ``mpiexec`` and mpi4py, and scripts run
as a user runs them, each in a process group of its own that is killed at the
end (an MPI job that hangs must not outlive its case).

* spawn mode: ``python script.py``; the pool spawns its ranks;
* mpiexec mode: ``mpiexec -n N python -m mpi4py.futures script.py``; the pool's
  workers are the job's other ranks.

MPI, once started in a process, stays there until it exits, and the other suites
fork this process: so every MPI run here is a process of its own.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from clusters.conftest import need, need_command

ROOT = Path(__file__).resolve().parents[2]
HOW = "apt-get install -y openmpi-bin libopenmpi-dev; pip install 'manycore[mpi]'"


def mpi_env() -> dict[str, str]:
    """The environment of an MPI run: manycore and the tests importable; Open
    MPI allowed to run as root (containers, CI) and to place more ranks than
    this machine has cores."""
    need("mpi4py", importlib.util.find_spec("mpi4py") is not None, HOW)
    need_command("mpiexec", HOW)
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
        MANYCORE_MPI_BOOT_TIMEOUT="60",
    )
    return env


def run(
    args: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in a session of its own, for at most ``timeout`` seconds;
    whatever it started is killed with it (a run killed so has returncode -9)."""
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env or mpi_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, _ = proc.communicate()
        out += f"\n[{' '.join(args)} ran past {timeout} s and was killed]"
    finally:
        _kill(proc)  # anything of its session left behind
    return subprocess.CompletedProcess(args, proc.returncode, out)


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


SPAWN_HANG = "did not start within"  # the pool's error when MPI_Comm_spawn hangs


def spawn_mode(script: Path, *args: str, timeout: float = 150) -> str:
    """``python script.py args``: the output; fails the case unless it exits 0.

    Open MPI 4.1 with an external PMIx (Debian's) hangs in MPI_Comm_spawn now
    and then (open-mpi/ompi#9713, openpmix#2735), and that process can spawn no
    more: the pool says so within its boot timeout, and the script runs again
    in a fresh process (at most twice more)."""
    env = mpi_env() | {"MANYCORE_MPI_BOOT_TIMEOUT": "20"}
    for _attempt in range(3):
        done = run([sys.executable, str(script), *args], timeout, env)
        if done.returncode == 0 or SPAWN_HANG not in done.stdout:
            break
    assert done.returncode == 0, done.stdout[-6000:]
    return done.stdout


def mpiexec_mode(script: Path, *args: str, ranks: int = 3, timeout: float = 180) -> str:
    """``mpiexec -n ranks python -m mpi4py.futures script.py args``: the output."""
    mpiexec = need_command("mpiexec", HOW)
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py.futures"]
    done = run([*command, str(script), *args], timeout)
    assert done.returncode == 0, done.stdout[-6000:]
    return done.stdout
