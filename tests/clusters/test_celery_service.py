"""backend="celery" against Redis and a Celery worker started as separate
services (``redis-server``, ``manycore celery-worker``): the shared backend
suite, the fault cases (an item that raises, hangs past its timeout, kills its
worker process), worker state, graphs, Redis that does not grow, and a pool
that starts (and stops) its own workers, or its own Redis too."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import clusterfns as cf
import manycore as mc
from clusters import rayfns as fns
from clusters._celery_service import (
    HOW,
    TESTS,
    Broker,
    celery_broker,
    env,
    has_celery,
    redis_client,
    start_redis,
    workers_on,
)
from clusters._ray_service import free_port
from clusters.conftest import need
from clusters.test_mpi import SHARED_SUITE, _passed
from clusters.test_ray_service import _expect_two_timeouts, _kinds

__all__ = ["celery_broker"]  # (the fixture, imported for pytest)


@pytest.fixture(autouse=True)
def _celery_installed() -> None:
    need("celery", has_celery(), HOW)


@pytest.fixture
def pool(celery_broker: Broker) -> Iterator[mc.Pool]:
    with mc.Pool(backend="celery", address=celery_broker.url) as p:
        yield p


def _celery_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if "celery" in line and "worker" in line]


@pytest.mark.timeout(120)
def test_the_running_workers_are_used_and_nothing_is_started(celery_broker: Broker) -> None:
    before = _celery_processes()
    with mc.Pool(backend="celery", address=celery_broker.url) as p:
        assert p.workers == 2  # the worker's own report (-c 2)
        assert p.map(lambda x: x + 1, range(100)) == list(range(1, 101))
        assert _celery_processes() == before
        with pytest.raises(NotImplementedError, match="backend='celery'"):
            p.Lock()


@pytest.mark.timeout(120)
def test_timeouts_fail_only_the_hung_items(pool: mc.Pool) -> None:
    _expect_two_timeouts(pool)


@pytest.mark.timeout(120)
def test_a_killed_worker_process_fails_only_its_item(pool: mc.Pool) -> None:
    out = pool.map(fns.die_on, range(12), on_error="collect")
    assert _kinds(out) == [*range(5), "WorkerCrashed", *range(6, 12)]
    assert "WorkerLostError" in repr(out[5].exception.__cause__)
    assert pool.map(fns.square, range(10)) == [x * x for x in range(10)]


@pytest.mark.timeout(120)
def test_errors_retries_and_on_error(pool: mc.Pool, tmp_path: Path) -> None:
    with pytest.raises(fns.Custom, match="item 4") as info:
        pool.map(fns.raise_on, range(8))
    assert type(info.value) is fns.Custom
    assert type(info.value.__cause__).__name__ == "RemoteTraceback"
    assert pool.map(fns.raise_on, range(8), on_error="skip") == [0, 1, 2, 3, 5, 6, 7]
    out = pool.map(fns.raise_on, range(8), on_error="collect")
    assert isinstance(out[4], mc.Failure) and type(out[4].exception) is fns.Custom
    assert pool.map(fns.fail_first, [str(tmp_path / "m")], retries=1) == ["second try"]
    out = pool.map(fns.fail_first, [str(tmp_path / "n")], retries=0, on_error="collect")
    assert isinstance(out[0], mc.Failure) and type(out[0].exception) is ConnectionError


@pytest.mark.timeout(120)
def test_worker_state_shared_graphs_progress_and_stats(celery_broker: Broker) -> None:
    url = celery_broker.url
    with mc.Pool(backend="celery", address=url, init=cf.load_state, init_args=(7,)) as p:
        assert p.map(cf.state_value, range(8)) == [7] * 8
    with mc.Pool(backend="celery", address=url, shared=np.arange(10.0)) as p:
        assert p.map(cf.shared_sum, range(4)) == [45.0] * 4
        square, add = mc.task(cf.square, pool=p), mc.task(cf.add, pool=p)
        assert add(square(3), square(4)).result(timeout=60) == 25
        assert p.map(abs, range(-50, 50), progress=True) == [abs(x) for x in range(-50, 50)]
        stats = p.stats()
        assert stats.items >= 100 and stats.failed == 0, stats
        assert all(":" in str(w.worker) for w in stats.workers), stats  # host:pid


@pytest.mark.timeout(120)
def test_redis_does_not_grow(pool: mc.Pool, celery_broker: Broker) -> None:
    client = redis_client(celery_broker.url)
    pool.map(fns.square, range(20), chunksize=1)  # the queue's own keys exist after a first run
    before = client.dbsize()
    pool.map(fns.square, range(300), chunksize=1)
    pool.map(fns.raise_on, range(50), chunksize=1, on_error="collect")
    pool.map(fns.hang_on, [1, 3, 2], timeout=2, on_error="collect")
    time.sleep(2)  # (a revoked task's late states are deleted as they come)
    assert client.dbsize() <= before, client.keys("*")


@pytest.mark.timeout(180)
def test_a_broker_without_workers_gets_the_pools_own(tmp_path: Path) -> None:
    redis, url = start_redis()
    try:
        with mc.Pool(backend="celery", address=url, workers=2) as p:
            assert p.workers == 2
            assert p.map(fns.square, range(20)) == [x * x for x in range(20)]
            assert len(workers_on(url)) == 1
        assert workers_on(url) == {}  # stopped with the pool
    finally:
        redis.stop()


@pytest.mark.timeout(180)
def test_no_address_starts_and_stops_redis_and_workers() -> None:
    code = (
        "import manycore as mc\n"
        "with mc.Pool(backend='celery', workers=2) as p:\n"
        "    assert p.map(lambda x: x * 2, range(10)) == [x * 2 for x in range(10)]\n"
        "    print('URL', p._backend._url, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stdout + done.stderr
    url = next(ln[4:] for ln in done.stdout.splitlines() if ln.startswith("URL "))
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    assert f"--port {port}" not in out and url not in out, "the pool's services outlived it"


@pytest.mark.timeout(60)
def test_nothing_listening_is_named_within_seconds() -> None:
    address = f"redis://127.0.0.1:{free_port()}/0"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=address):
        mc.Pool(backend="celery", address=address)
    assert time.monotonic() - start < 10


@pytest.mark.timeout(900)
def test_the_shared_backend_suite(celery_broker: Broker) -> None:
    """Every case of the pool fixture on backend='celery', in a pytest of its own."""
    files = [str(TESTS / name) for name in SHARED_SUITE]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "celery"]
    command += ["--timeout", "120", *files]
    full: dict[str, Any] = env() | {"MANYCORE_TEST_CELERY": celery_broker.url}
    done = subprocess.run(command, env=full, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-8000:]
    assert _passed(done.stdout) >= 60, done.stdout[-2000:]  # (66 here)
