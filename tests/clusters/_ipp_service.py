"""An IPython parallel cluster started as a separate service, as a user starts
one: ``ipcluster start -n 2 --ip=127.0.0.1`` in a profile directory of its own
(so it never touches ``~/.ipython``) and a process group of its own. Teardown
kills that group and every process it started (each engine's nanny runs in a
session of its own: they are found as the group's descendants), and checks
that nothing is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clusters._ray_service import SRC, TESTS
from clusters.conftest import need

START_BOUND = 120.0  # seconds for the controller and 2 engines (2 busy cores)
HOW = "pip install ipyparallel"


@dataclass
class IPPService:
    profile_dir: Path
    cluster_id: str
    connection_file: Path  # address= for a pool
    proc: subprocess.Popen[bytes]
    seen: set[int]  # every process of the service seen so far

    def pids(self) -> list[int]:
        """The service's processes still alive (zombies aside)."""
        import psutil

        try:
            leader = psutil.Process(self.proc.pid)
            self.seen |= {leader.pid, *(p.pid for p in leader.children(recursive=True))}
        except psutil.Error:
            pass
        alive = []
        for pid in self.seen:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.Error:
                pass
        return alive


def _engines(connection_file: Path) -> int:
    """How many engines the controller has (0: it does not answer yet)."""
    import ipyparallel as ipp

    try:
        client = ipp.Client(str(connection_file), timeout=5)
    except Exception:
        return 0
    try:
        return len(client.ids)
    finally:
        client.close()


def start(tmp: Path, engines: int = 2) -> IPPService:
    cluster_id = f"t{uuid.uuid4().hex[:8]}"
    ipcluster = Path(sys.executable).parent / "ipcluster"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    cmd = [str(ipcluster), "start", "-n", str(engines), "--ip=127.0.0.1"]
    cmd += [f"--profile-dir={tmp}", f"--cluster-id={cluster_id}", "--daemonize=False"]
    with (tmp / "ipcluster.log").open("wb") as log:  # (the child keeps its own copy)
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=log)
    connection = tmp / "security" / f"ipcontroller-{cluster_id}-client.json"
    service = IPPService(tmp, cluster_id, connection, proc, set())
    try:
        deadline = time.monotonic() + START_BOUND
        while not (connection.exists() and _engines(connection) >= engines):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = (tmp / "ipcluster.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"ipcluster did not start {engines} engines:\n{out}")
            time.sleep(0.5)
        service.pids()  # (the processes, remembered for teardown)
    except BaseException:
        stop(service)
        raise
    json.loads(connection.read_text())  # (a whole file)
    return service


def stop(service: IPPService) -> None:
    """Kill the service's processes (TERM, then KILL), bounded, and check."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in service.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while service.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not service.pids():
            service.proc.wait(5)
            return
    raise RuntimeError(f"ipcluster processes left after teardown: {service.pids()}")


def need_ipyparallel() -> None:
    ipcluster = Path(sys.executable).parent / "ipcluster"
    need("ipyparallel", ipcluster.exists(), HOW)


@pytest.fixture(scope="module")
def ipp_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IPPService]:
    """``ipcluster start -n 2`` on 127.0.0.1, for the cases of one test file."""
    need_ipyparallel()
    service = start(tmp_path_factory.mktemp("ipcluster"))
    try:
        yield service
    finally:
        stop(service)
