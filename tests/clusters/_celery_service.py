"""Redis and a Celery worker started as separate services, as a user runs them:
``redis-server`` on a free loopback port (nothing saved to disk), and
``manycore celery-worker --broker URL -c 2``. Each runs in a process group of
its own: teardown kills the group (the worker's pool processes with it) and
checks that nothing of it is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import manycore as mc
from clusters._ray_service import free_port
from clusters.conftest import need, need_command

TESTS = Path(__file__).resolve().parent.parent
SRC = Path(mc.__file__).resolve().parents[1]  # the manycore this run imported
START_BOUND = 60.0  # seconds for a service to answer (2 busy cores)
HOW = "apt-get install -y redis-server; pip install -e '.[celery]'"


def env() -> dict[str, str]:
    """Where the workers find manycore and the tests' task modules."""
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    if os.geteuid() == 0:
        full["C_FORCE_ROOT"] = "1"  # (CI runs as root: Celery refuses pickle there otherwise)
    return full


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    what: str

    def alive(self) -> bool:
        """Any process of its group still there (zombies aside)."""
        out = subprocess.run(
            ["ps", "-eo", "pgid=,stat="], capture_output=True, text=True, check=True
        ).stdout
        return any(
            int(pgid) == self.proc.pid and not stat.startswith("Z")
            for pgid, stat in (line.split() for line in out.splitlines())
        )

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 5.0
            while self.alive() and time.monotonic() < deadline:
                self.proc.poll()
                time.sleep(0.1)
            if not self.alive():
                break
        self.proc.poll()
        if self.alive():
            raise RuntimeError(f"{self.what} processes left after teardown")


def start(cmd: list[str], what: str) -> Service:
    proc = subprocess.Popen(
        cmd, env=env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    return Service(proc, what)


def start_redis() -> tuple[Service, str]:
    server = need_command("redis-server", HOW)
    port = free_port()
    cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    service = start(cmd, "redis-server")
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: redis_client(url).ping(), service)
    return service, url


def start_worker(url: str, concurrency: int = 2) -> Service:
    cmd = [
        sys.executable,
        "-m",
        "manycore",
        "celery-worker",
        "--broker",
        url,
        "-c",
        str(concurrency),
    ]
    service = start(cmd, "celery worker")
    _wait(lambda: len(workers_on(url)) > 0, service)
    return service


def redis_client(url: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2)


def workers_on(url: str) -> dict[str, object]:
    from celery import Celery

    from manycore.backends._celery_app import configure

    app = Celery("probe", set_as_current=False)
    configure(app, url)  # (the workers take pickled messages only, control ones too)
    try:
        return app.control.inspect(timeout=1.0).ping() or {}
    finally:
        app.close()


def _wait(ready, service: Service) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + START_BOUND
    while True:
        try:
            if ready():
                return
        except Exception:
            pass
        if service.proc.poll() is not None or time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"{service.what} did not start (exit {service.proc.returncode})")
        time.sleep(0.2)


@dataclass(frozen=True)
class Broker:
    url: str
    worker: Service


@pytest.fixture(scope="session")
def celery_broker() -> Iterator[Broker]:
    """A Redis broker on 127.0.0.1 with a 2-process Celery worker of manycore's app."""
    need("celery", has_celery(), HOW)
    need_command("ps", "apt-get install -y procps")
    redis_service, url = start_redis()
    try:
        worker = start_worker(url)
        try:
            yield Broker(url, worker)
        finally:
            worker.stop()
    finally:
        redis_service.stop()


def has_celery() -> bool:
    import importlib.util

    return importlib.util.find_spec("celery") is not None
