"""backend="dask" against a cluster started as a user starts one (``dask
scheduler`` and ``dask worker`` processes on 127.0.0.1): the defects of issue 16,
each a case. A case that kills parts of the cluster gets a cluster of its own."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import clusterfns as cf
import manycore as mc
from helpers import bounded

from ._dask_service import DaskService, dask_service, fresh_dask_service, need_distributed

__all__ = ["dask_service", "fresh_dask_service"]  # the fixtures, used by name


@pytest.fixture
def pool(dask_service: DaskService) -> Iterator[mc.Pool]:
    p = mc.Pool(backend="dask", address=dask_service.address)
    try:
        yield p
    finally:
        bounded(lambda: p.shutdown(cancel_pending=True), 30)


def test_the_service_answers(pool: mc.Pool) -> None:
    assert pool.workers == 2
    assert pool.map(cf.square, range(100)) == [x * x for x in range(100)]


# ------------------------------------------------- 1. timeouts stop the task


@pytest.mark.timeout(240)
def test_a_timeout_stops_the_task_and_fails_only_its_item(fresh_dask_service: DaskService) -> None:
    p = mc.Pool(backend="dask", address=fresh_dask_service.address)
    try:
        out = bounded(lambda: p.map(cf.hang_on, range(20), timeout=2, on_error="collect"), 120)
        failed = [i for i, x in enumerate(out) if isinstance(x, mc.Failure)]
        assert failed == [3, 11], [out[i] for i in failed]
        assert all(isinstance(out[i].exception, mc.TaskTimeout) for i in failed)
        assert [x for i, x in enumerate(out) if i not in failed] == [
            i for i in range(20) if i not in failed
        ]
        # The pool is whole after: an untimed map, a timed map.
        assert bounded(lambda: p.map(cf.square, range(50)), 30) == [x * x for x in range(50)]
        assert bounded(lambda: p.map(cf.nap, [0.1] * 6, timeout=5), 30) == [0.1] * 6
        assert p.workers == 2
    finally:
        bounded(p.shutdown, 30)  # the with exit does not block


# ------------------------------------------------- 2. a cluster that dies


def _dies_under_a_map(service: DaskService, kill: Callable[[], None]) -> BaseException:
    p = mc.Pool(backend="dask", address=service.address)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            p.map(cf.nap, [5.0] * 6)
        except BaseException as exc:
            errors.append(exc)

    try:
        mapping = threading.Thread(target=run, daemon=True)
        mapping.start()
        time.sleep(2.0)
        kill()
        started = time.monotonic()
        mapping.join(60)
        assert not mapping.is_alive(), "the map hung"
        assert time.monotonic() - started < 45
        assert len(errors) == 1 and isinstance(errors[0], (mc.WorkerCrashed, mc.PoolBroken))
        # The next map fails too, and closing does not hang.
        with pytest.raises((mc.WorkerCrashed, mc.PoolBroken)):
            bounded(lambda: p.map(cf.square, range(4)), 60)
        return errors[0]
    finally:
        bounded(p.shutdown, 30)


@pytest.mark.timeout(200)
def test_all_workers_killed_mid_map(fresh_dask_service: DaskService) -> None:
    error = _dies_under_a_map(fresh_dask_service, fresh_dask_service.kill_workers)
    assert "no workers" in str(error)


@pytest.mark.timeout(200)
def test_the_scheduler_killed_mid_map(fresh_dask_service: DaskService) -> None:
    error = _dies_under_a_map(fresh_dask_service, fresh_dask_service.kill_scheduler)
    assert "scheduler" in str(error) and fresh_dask_service.address in str(error)


# ------------------------------------------- 3. a worker and its nanny die


@pytest.mark.timeout(200)
def test_a_lost_worker_is_counted(fresh_dask_service: DaskService) -> None:
    p = mc.Pool(backend="dask", address=fresh_dask_service.address)
    try:
        assert p.workers == 2
        fresh_dask_service.kill_worker(1)
        deadline = time.monotonic() + 30
        while fresh_dask_service.live_workers() != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fresh_dask_service.live_workers() == 1
        deadline = time.monotonic() + 10
        while p.workers != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert p.workers == 1
        # 6 items of 0.5 s on the one worker left, each given 2 s once it runs.
        assert bounded(lambda: p.map(cf.nap, [0.5] * 6, timeout=2), 60) == [0.5] * 6
    finally:
        bounded(p.shutdown, 30)


# ---------------------------------------------------- 4. wrong addresses


@pytest.mark.timeout(60)
def test_nothing_listening_fails_fast_naming_the_address() -> None:
    need_distributed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    address = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=address):
        bounded(lambda: mc.Pool(backend="dask", address=address), 30)
    assert time.monotonic() - started < 8


@pytest.fixture(params=["talks", "silent"])
def not_dask(request: pytest.FixtureRequest) -> Iterator[str]:
    """A TCP service that is not a Dask scheduler: one that answers in its own
    protocol (as a Ray or HTTP port does), or one that says nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()
    talks = request.param == "talks"

    def serve() -> None:
        server.settimeout(0.2)
        held = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if talks:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                conn.close()
            else:
                held.append(conn)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    server.close()


@pytest.mark.timeout(60)
def test_a_service_that_is_not_dask_is_named(not_dask: str) -> None:
    need_distributed()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"{not_dask}.*Dask scheduler") as info:
        bounded(lambda: mc.Pool(backend="dask", address=not_dask), 40)
    assert time.monotonic() - started < 15
    assert "CommClosedError" not in type(info.value).__name__


# ------------------------------------- 5. a module the workers cannot import


def test_a_module_the_workers_lack_is_named(pool: mc.Pool, tmp_path: Path) -> None:
    (tmp_path / "only_here_mod.py").write_text("def double(x):\n    return 2 * x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import only_here_mod  # type: ignore[import-not-found]

        with pytest.raises(mc.WorkerCrashed, match="only_here_mod") as info:
            bounded(lambda: pool.map(only_here_mod.double, range(3)), 60)
        assert isinstance(info.value.__cause__, ModuleNotFoundError)
        assert "deserialization" not in str(info.value).split("\n")[0]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_here_mod", None)


# ---------------------------------------------------- 6. tasks that call tasks


def _is_fork_server(proc: psutil.Process) -> bool:
    try:
        return any("_forkserver import serve" in arg for arg in proc.cmdline())
    except psutil.NoSuchProcess:
        return False


def _pool_processes_below(service: DaskService) -> list[psutil.Process]:
    """Processes below the Dask worker processes (nanny -> worker -> ?), but for
    one fork server per worker: the launcher a worker process keeps, as
    multiprocessing's forkserver, so its next map starts fast. More than one is
    a leak and counts."""
    found = []
    for nanny in service.workers:
        for worker in psutil.Process(nanny.pid).children():
            below = worker.children(recursive=True)
            servers = [p for p in worker.children() if _is_fork_server(p)]
            found += [p for p in below if p not in servers[:1]]
    return found


def test_nested_calls_start_no_pool_that_outlives_the_map(dask_service: DaskService) -> None:
    with mc.Pool(backend="dask", address=dask_service.address) as p:
        out = bounded(lambda: p.map(cf.nested_calls, [3, 4]), 60)
    assert out == [([3, 2, 1], [3, 2, 1], 3), ([4, 3, 2, 1], [4, 3, 2, 1], 4)]
    deadline = time.monotonic() + 10
    while _pool_processes_below(dask_service) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _pool_processes_below(dask_service) == []


@pytest.mark.timeout(120)
def test_an_item_that_waits_for_a_busy_cluster_does_not_time_out(
    dask_service: DaskService, pool: mc.Pool
) -> None:
    # Both workers busy for 4 s with someone else's tasks: timed items wait
    # behind them on the workers, and their 2 s start when they do.
    with dask_service.client() as other:
        busy = [other.submit(cf.nap, 4.0, pure=False) for _ in range(2)]
        time.sleep(0.5)
        out = bounded(lambda: pool.map(cf.nap, [0.1] * 4, timeout=2), 60)
        other.gather(busy)
    assert out == [0.1] * 4
