"""A Dask cluster started as a user starts one: a ``dask scheduler`` process and
``dask worker`` processes (each with its nanny, one thread), on 127.0.0.1, each
in a process group of its own so that a test can kill one worker (nanny and
all), every worker, or the scheduler, and teardown kills whatever is left.

``dask_service`` is one such cluster for a whole module; ``fresh_dask_service``
is a cluster of its own for a test that kills parts of it; ``gpu_dask_service``
one whose first worker advertises a GPU (``--resources GPU=1``, its own
``CUDA_VISIBLE_DEVICES``: no GPU is needed, none is used)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import need, need_command

_TESTS = Path(__file__).resolve().parent.parent
_SRC = _TESTS.parent / "src"
_START_TIMEOUT = 60.0
FAKE_DEVICES = ("7", "5")  # what the GPU workers' CUDA_VISIBLE_DEVICES say


def need_distributed() -> None:
    """Skip where dask.distributed is not installed (fail in CI)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        need("dask.distributed", False, "pip install -e '.[test]'")


def _dask_command() -> str:
    beside = Path(sys.executable).parent / "dask"  # the venv's, when it is not on PATH
    if beside.exists():
        return str(beside)
    return need_command("dask", "pip install -e '.[test]' (dask[distributed])")


class DaskService:
    """The processes of one cluster, and what a test does to them."""

    def __init__(self, tmp: Path, workers: int = 2, gpu_workers: int = 0):
        need_distributed()  # (the client side must be there too)
        self.tmp = tmp
        self.workers: list[subprocess.Popen[bytes]] = []
        self.scheduler_file = tmp / "scheduler.json"
        self.command = _dask_command()
        self.env = self._environment()
        self.scheduler = self._start(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", "0"],
            ["--dashboard-address", "127.0.0.1:0"],
        )
        self.address = self._read_address()
        for i in range(workers):
            self.add_worker(f"w{i}", gpu=FAKE_DEVICES[i] if i < gpu_workers else None)
        self.wait_for_workers(workers)

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The workers import manycore and the tests' function modules (clusterfns).
        paths = [str(_SRC), str(_TESTS), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env.pop("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", None)
        return env

    def _start(
        self, name: str, args: list[str], extra: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115  # the child holds it
        with log:
            return subprocess.Popen(
                [self.command, *args, "--scheduler-file", str(self.scheduler_file), *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env or self.env,
                start_new_session=True,  # its own process group: killed as one
            )

    def add_worker(self, name: str, gpu: str | None = None) -> None:
        """A worker named ``name``; with ``gpu``, one that advertises a GPU and
        is pinned to device ``gpu``, as a user starts one on a GPU machine."""
        args = ["worker", "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1"]
        extra = ["--dashboard-address", "127.0.0.1:0", "--name", name, "--death-timeout", "60"]
        env = None
        if gpu is not None:
            extra += ["--resources", "GPU=1"]
            env = {**self.env, "CUDA_VISIBLE_DEVICES": gpu}
        self.workers.append(self._start(f"worker-{name}", args, extra, env))

    def _read_address(self) -> str:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                break
            try:
                return str(json.loads(self.scheduler_file.read_text())["address"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the dask scheduler did not start: {self.log('scheduler')}")

    def log(self, name: str) -> str:
        try:
            return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def client(self) -> Any:  # a distributed.Client: untyped
        import distributed

        return distributed.Client(self.address, set_as_default=False, timeout=10)

    def live_workers(self) -> int:
        with self.client() as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])

    def wait_for_workers(self, n: int, timeout: float = _START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.live_workers() == n:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{n} dask workers did not register: {self.log('worker-w0')}")

    def kill_worker(self, index: int) -> None:
        """Kill worker ``index``, its nanny too (the whole process group)."""
        _kill_group(self.workers[index])

    def kill_workers(self) -> None:
        for proc in self.workers:
            _kill_group(proc)

    def kill_scheduler(self) -> None:
        _kill_group(self.scheduler)

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="module")
def dask_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskService]:
    """A cluster of 2 workers for a module's tests that leave it whole."""
    service = DaskService(tmp_path_factory.mktemp("dask"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def gpu_dask_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskService]:
    """2 workers: ``w0`` advertises a GPU (device ``FAKE_DEVICES[0]``), ``w1`` none."""
    service = DaskService(tmp_path_factory.mktemp("dask-gpu"), gpu_workers=1)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def fresh_dask_service(tmp_path: Path) -> Iterator[DaskService]:
    """A cluster of 2 workers of this test's own (it may kill parts of it)."""
    service = DaskService(tmp_path)
    try:
        yield service
    finally:
        service.stop()


__all__ = [
    "FAKE_DEVICES",
    "DaskService",
    "dask_service",
    "fresh_dask_service",
    "gpu_dask_service",
    "need_distributed",
]
