"""``gpus=``: each worker process pinned to one device, checked without a GPU by
what each worker sees (its environment, ``mc.worker_gpu()``), on every start
method and after a worker is replaced; the task options sent to Dask and Ray."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import manycore as mc
from conftest import PROCESS_BACKENDS
from manycore.backends import DaskBackend, get_backend
from manycore.backends._gpus import slot_envs, task_share
from test_call_checks import no_default_pool  # noqa: F401  (a fixture)

View = tuple[str | None, str | None, int | None]  # CUDA's, HIP's, mc.worker_gpu()
_PINNING = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "MANYCORE_GPU")


@pytest.fixture(autouse=True)
def _no_devices_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids count from what this process sees: none of the variables set here."""
    for name in _PINNING:
        monkeypatch.delenv(name, raising=False)


def view(_: object = None) -> View:
    env = os.environ
    return env.get("CUDA_VISIBLE_DEVICES"), env.get("HIP_VISIBLE_DEVICES"), mc.worker_gpu()


def meet(arg: tuple[Any, int, str]) -> tuple[int, View]:
    """Wait until ``n`` tasks have arrived (so each of ``n`` workers runs one),
    then do ``what`` on the worker pinned to device 1: "crash" or "hang"."""
    arrived, n, what = arg
    arrived.increment()
    deadline = time.monotonic() + 60
    while arrived.value < n and time.monotonic() < deadline:
        time.sleep(0.005)
    if mc.worker_gpu() == 1 and what == "crash":
        os._exit(3)
    if mc.worker_gpu() == 1 and what == "hang":
        time.sleep(3600)
    return os.getpid(), view()


def every_worker(pool: mc.Pool, what: str = "", **options: Any) -> list[Any]:
    """One task on each worker of ``pool``, all at once."""
    arrived = pool.Counter()
    items = [(arrived, pool.workers, what)] * pool.workers
    return pool.map(meet, items, chunksize=1, **options)


def pinned(device: int) -> View:
    return str(device), str(device), device


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_each_worker_sees_its_own_device(backend: tuple[str, str]) -> None:
    with mc.Pool(backend=backend[0], start_method=backend[1], gpus=[1, 3]) as pool:
        assert pool.workers == 2  # one per device by default
        seen = sorted(v for _, v in every_worker(pool))
    assert seen == [pinned(1), pinned(3)]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_workers_share_the_devices_evenly(backend: tuple[str, str]) -> None:
    with mc.Pool(4, backend=backend[0], start_method=backend[1], gpus=2) as pool:
        seen = [v for _, v in every_worker(pool)]
    assert Counter(seen) == {pinned(0): 2, pinned(1): 2}


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_crashed_worker_is_replaced_on_its_device(backend: tuple[str, str]) -> None:
    with mc.Pool(backend=backend[0], start_method=backend[1], gpus=2) as pool:
        before = dict(every_worker(pool))
        out = every_worker(pool, "crash", on_error="collect")
        assert sum(isinstance(r, mc.Failure) for r in out) == 1
        after = dict(every_worker(pool))
    assert sorted(after.values()) == [pinned(0), pinned(1)]
    (old,) = [pid for pid, v in before.items() if v == pinned(1)]
    assert old not in after  # device 1's worker is a new process, on device 1


@pytest.mark.slow  # seconds long: make test-slow (CI runs it)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_worker_killed_at_its_timeout_is_replaced_on_its_device(
    backend: tuple[str, str],
) -> None:
    with mc.Pool(backend=backend[0], start_method=backend[1], gpus=2) as pool:
        out = every_worker(pool, "hang", on_error="collect", timeout=2)
        assert [type(r.exception) for r in out if isinstance(r, mc.Failure)] == [mc.TaskTimeout]
        after = every_worker(pool)
    assert sorted(v for _, v in after) == [pinned(0), pinned(1)]


def test_a_recycled_worker_keeps_its_device() -> None:
    with mc.Pool(gpus=[0, 1], max_tasks_per_worker=1) as pool:
        out = pool.map(view, range(8), chunksize=1)  # each item on a fresh worker
        stats = pool.stats().workers
    # Slot i runs on device i, its replacements too: the items each slot ran are
    # the items each device saw.
    assert Counter(out) == {pinned(int(w.worker)): w.items for w in stats if w.items}
    assert sum(w.restarts for w in stats) >= 6


def test_ids_count_the_devices_this_process_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    with mc.Pool(gpus=2) as pool:
        seen = sorted(v for _, v in every_worker(pool))
    assert seen == [("5", "5", 0), ("7", "7", 1)]  # HIP reads CUDA's list when its own is unset
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "2,3")
    assert [env["HIP_VISIBLE_DEVICES"] for env in slot_envs((1,), 1)] == ["3"]
    with pytest.raises(ValueError, match=r"gpus: device 2 is not among the 2 .*'5,7'"):
        mc.Pool(gpus=[0, 2])


def test_map_pins_the_default_pools_workers() -> None:
    assert set(mc.map(view, range(4), gpus=[2], chunksize=1)) == {pinned(2)}
    assert mc.worker_gpu() is None  # the caller is not pinned
    assert set(mc.imap(view, range(2), gpus=[2])) == {pinned(2)}
    assert set(mc.starmap(view, [(1,)], gpus=[2])) == {pinned(2)}


def test_without_gpus_nothing_is_pinned() -> None:
    with mc.Pool(1) as pool:
        assert pool.map(view, [0]) == [(None, None, None)]
    with mc.Pool(1, backend="threads") as pool:
        assert pool.map(view, [0]) == [(None, None, None)]


def test_a_pool_started_in_a_pinned_worker_stays_on_its_device() -> None:
    with mc.Pool(gpus=[1]) as pool:
        assert pool.submit(_nested).result(60) == ("1", "1", 0)


def _nested() -> View:
    with mc.Pool(gpus=1) as inner:  # device 0 of what this worker sees: device 1
        return inner.submit(view).result(60)


BAD = [
    (-1, ValueError, "gpus=-1 must be at least 1"),
    (0, ValueError, "gpus=0 must be at least 1"),
    (True, TypeError, "gpus must be a count or a list"),
    ("0", TypeError, "gpus must be a count or a list"),
    (1.0, TypeError, "gpus must be a count or a list"),
    ([], ValueError, r"gpus=\[\]: none is a device id"),
    ([0, -1], ValueError, r"gpus=\[0, -1\]: -1 is not a device id"),
    ([0, "1"], ValueError, r"'1' is not a device id"),
    ([0.0], ValueError, r"0.0 is not a device id"),
    ([1, 0, 1], ValueError, r"gpus=\[1, 0, 1\] names a device twice"),
]


@pytest.mark.parametrize(("gpus", "error", "match"), BAD)
@pytest.mark.usefixtures("no_default_pool")  # and no worker process
def test_bad_gpus_are_refused_before_any_work(gpus: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        mc.Pool(gpus=gpus)
    for call in (mc.map, mc.imap):
        with pytest.raises(error, match=match):
            call(view, _never(), gpus=gpus)
    with pytest.raises(error, match=match):
        mc.starmap(view, _never(), gpus=gpus)


def _never() -> Iterator[int]:
    raise AssertionError("no input may be read")
    yield 0  # pragma: no cover


def test_more_devices_than_workers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"gpus=\[0, 1, 2\] names 3 devices but workers=2"):
        mc.Pool(2, gpus=[0, 1, 2])


@pytest.mark.parametrize("backend", ["threads", "serial", "asyncio", "auto"])
def test_backends_that_cannot_pin_refuse_gpus(backend: str) -> None:
    match = (
        rf"gpus=1 pins each worker to a device, which backend={backend!r} cannot do.*'processes'"
    )
    if backend != "auto":
        with pytest.raises(ValueError, match=match):
            mc.Pool(gpus=1, backend=backend)
    fn = aview if backend == "asyncio" else view
    with pytest.raises(ValueError, match=match):
        mc.map(fn, _never(), gpus=1, backend=backend)


async def aview(_: object = None) -> View:
    return view()


def test_gpus_are_a_backends_declared_option() -> None:
    takes = [n for n in mc.backend_names() if "gpus" in get_backend(n).accepts]
    assert takes == ["dask", "processes", "ray"]


# ------------------------------------------------------------- clusters


def test_each_cluster_task_asks_for_its_share_of_a_device() -> None:
    assert task_share(None, 4) is None
    assert task_share(2, 2) == 1.0  # one task per device (Ray's and Dask's usual)
    assert task_share(2, 4) == 0.5
    assert task_share(2, 3) == 0.5  # ceil: all workers fit at once
    assert task_share(4, 64) == 1 / 16


def test_a_cluster_takes_a_count_of_devices() -> None:
    cls = get_backend("dask")
    with pytest.raises(ValueError, match=r"gpus=\[0, 1\]: on a cluster .* give a count"):
        cls.check_options(None, {"gpus": (0, 1)})
    assert cls.check_options(None, {"gpus": 2}) == 2  # a local cluster: one worker each
    assert cls.check_options(None, {"gpus": 2, "address": "tcp://h:1"}) is None


_NO_CALL = (None, [], None, {}, None)  # run_remote's arguments: fn, items, how, kwargs, setup


class _FakeFuture:
    def add_done_callback(self, fn: Any) -> None:
        pass


class _FakeDaskClient:
    """What DaskBackend asks of a ``distributed.Client``, and what it submits."""

    status = "running"
    scheduler = SimpleNamespace(address="tcp://fake:1")

    def __init__(self, gpus_per_worker: float):
        self.gpus_per_worker = gpus_per_worker
        self.submitted: list[dict[str, Any]] = []

    def nthreads(self) -> dict[str, int]:
        return {"tcp://a:1": 2, "tcp://b:1": 2}

    def scheduler_info(self, n_workers: int = 5) -> dict[str, Any]:
        if n_workers == 0:  # the count of worker threads only
            return {"total_threads": sum(self.nthreads().values())}
        assert n_workers == -1  # every worker, not the first few
        resources = {"GPU": self.gpus_per_worker} if self.gpus_per_worker else {}
        return {"workers": {a: {"resources": resources} for a in self.nthreads()}}

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> _FakeFuture:
        self.submitted.append(kwargs)
        return _FakeFuture()


def _dask(client: _FakeDaskClient, gpus: int | None) -> DaskBackend:
    pytest.importorskip("distributed")
    return DaskBackend(mc.BackendOptions(workers=1, client=client, gpus=gpus))


def test_dask_tasks_ask_for_a_gpu_resource() -> None:
    client = _FakeDaskClient(gpus_per_worker=1)
    backend = _dask(client, gpus=2)  # 4 worker threads share 2 devices: half each
    backend._send(_NO_CALL, None)  # type: ignore[arg-type]
    assert client.submitted[-1]["resources"] == {"GPU": 0.5}
    plain = _dask(client, gpus=None)
    plain._send(_NO_CALL, None)  # type: ignore[arg-type]
    assert client.submitted[-1]["resources"] is None


def test_dask_without_gpu_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="no worker of the Dask cluster advertises a GPU"):
        _dask(_FakeDaskClient(gpus_per_worker=0), gpus=1)


class _FakeRay:
    """The few calls RayBackend makes of the ``ray`` module."""

    def __init__(self, gpus: float):
        self.resources = {"CPU": 4.0, "GPU": gpus}
        self.remote_options: dict[str, Any] = {}
        self.up = False

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kwargs: Any) -> None:
        self.up = True

    def shutdown(self) -> None:
        self.up = False

    def cluster_resources(self) -> dict[str, float]:
        return self.resources

    def remote(self, **options: Any) -> Any:
        self.remote_options = options
        return lambda fn: fn


def _ray(monkeypatch: pytest.MonkeyPatch, fake: _FakeRay, gpus: int | None) -> Any:
    monkeypatch.setattr("manycore.backends.cluster_ray._import", lambda: fake)
    return get_backend("ray")(mc.BackendOptions(workers=4, gpus=gpus))


def test_ray_tasks_ask_for_num_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRay(gpus=2)
    backend = _ray(monkeypatch, fake, gpus=2)
    assert fake.remote_options == {"max_retries": 0, "num_gpus": 0.5}  # 4 workers, 2 devices
    backend.shutdown()
    _ray(monkeypatch, fake, gpus=None).shutdown()
    assert fake.remote_options == {"max_retries": 0}


def test_ray_without_gpus_is_refused_and_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRay(gpus=0)
    with pytest.raises(ValueError, match="no worker of the Ray cluster advertises a GPU"):
        _ray(monkeypatch, fake, gpus=1)
    assert not fake.up  # the runtime it started is shut down again


@pytest.mark.cluster
def test_dask_workers_that_advertise_gpus_run_the_tasks() -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,  # the resource bookkeeping is the scheduler's: threads do
            dashboard_address=None,  # in-process: nothing listens
            resources={"GPU": 1},
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
        mc.Pool(backend="dask", client=client, gpus=2) as pool,
    ):
        assert pool.map(abs, range(-50, 0)) == list(range(50, 0, -1))
    with (
        distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
        pytest.raises(ValueError, match="no worker of the Dask cluster advertises a GPU"),
    ):
        mc.Pool(backend="dask", client=client, gpus=1)


def test_celery_refuses_gpus_naming_the_backends_that_take_them() -> None:
    with pytest.raises(ValueError, match=r"backend='celery' cannot do.*'dask', 'processes'"):
        mc.Pool(gpus=1, backend="celery", address="redis://127.0.0.1:1/0")
