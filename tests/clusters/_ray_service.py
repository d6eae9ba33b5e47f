"""A Ray head started as a separate service, as a user starts one: ``ray start
--head`` on 127.0.0.1 with 2 CPUs, a Ray Client server (for ``ray://``) and Ray's
token authentication on (the default a user meets once a token exists).

Everything runs in a temporary Ray directory of its own (``--temp-dir``), so the
head never touches ``/tmp/ray`` and its address file, and in a process group of
its own: teardown kills that group and the workers (Ray starts them in sessions
of their own; they name the temporary directory) and checks that nothing of it
is left. (``ray stop`` would stop every Ray on the machine, other people's too.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import manycore as mc
from clusters.conftest import need, need_command

TESTS = Path(__file__).resolve().parent.parent
SRC = Path(mc.__file__).resolve().parents[1]  # the manycore this run imported
START_BOUND = 90.0  # seconds for `ray start` and the first answer (2 busy cores)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RayHead:
    address: str  # the GCS, "127.0.0.1:port": address= for a driver on this machine
    client: str  # the Ray Client server, "ray://127.0.0.1:port"
    token_path: Path
    env: dict[str, str]  # what a driver needs: token auth on, the token's file
    pgid: int
    temp_dir: Path  # every process of the head names it on its command line

    def pids(self) -> list[int]:
        """The head's processes still alive (zombies aside): its process group,
        and the workers, which Ray starts in sessions of their own."""
        out = subprocess.run(
            ["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True
        ).stdout
        found = []
        for line in out.splitlines():
            pid, pgid, stat, *args = line.split(None, 3)
            mine = int(pgid) == self.pgid or str(self.temp_dir) in "".join(args)
            if mine and not stat.startswith("Z") and int(pid) != os.getpid():
                found.append(int(pid))
        return found


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1.0).close()
        return True
    except OSError:
        return False


def _start(tmp: Path, ray: str) -> RayHead:
    port, client_port = free_port(), free_port()
    token_path = tmp / "auth_token"
    token_path.write_text(uuid.uuid4().hex)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    full.pop("RAY_ADDRESS", None)
    cmd = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    cmd += ["--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"]
    cmd += ["--ray-client-server-port", str(client_port), "--temp-dir", str(tmp / "ray")]
    proc = subprocess.Popen(
        cmd, env=full, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    where = (f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}")
    head = RayHead(*where, token_path, env, proc.pid, tmp / "ray")
    try:
        out, _ = proc.communicate(timeout=START_BOUND)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{out.decode(errors='replace')[-3000:]}")
        deadline = time.monotonic() + START_BOUND
        while not (_answers(port) and _answers(client_port)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head on {port}/{client_port} does not answer")
            time.sleep(0.2)
    except BaseException:
        _stop(head)
        raise
    return head


def _stop(head: RayHead) -> None:
    """Kill the head's processes (TERM, then KILL), bounded, and check."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for pid in head.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while head.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not head.pids():
            return
    raise RuntimeError(f"Ray head processes left after teardown: {head.pids()}")


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A Ray head on 127.0.0.1 (GCS and Ray Client), token authentication on; this
    process is set up as a driver with the token (``RAY_AUTH_MODE=token``)."""
    ray = Path(sys.executable).parent / "ray"
    need("ray", ray.exists(), "pip install -e '.[ray]'")
    need_command("ps", "apt-get install -y procps")
    head = _start(tmp_path_factory.mktemp("rayhead"), str(ray))
    saved = {k: os.environ.get(k) for k in head.env}
    os.environ.update(head.env)
    try:
        yield head
    finally:
        _shutdown_driver()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _stop(head)


def _shutdown_driver() -> None:
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()
