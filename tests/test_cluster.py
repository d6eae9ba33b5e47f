"""backend="dask" and backend="ray" on real local clusters (each skipped, with its
reason, where the engine is not installed). The clusters start once per session;
these tests run after all others (see conftest), because the engines leave
threads in this process and other tests fork."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import pytest

import clusterfns as cf
import manycore as mc
from manycore.backends import get_backend

pytestmark = pytest.mark.cluster

np = pytest.importorskip("numpy")


@pytest.fixture(params=["dask", "ray"])
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Pool options that reuse the session's cluster of this engine."""
    if request.param == "dask":
        return {"backend": "dask", "client": request.getfixturevalue("dask_client")}
    request.getfixturevalue("ray_runtime")
    return {"backend": "ray"}


@pytest.fixture
def pool(engine: dict[str, Any]) -> Iterator[mc.Pool]:
    with mc.Pool(**engine) as p:
        yield p


def test_map_imap_starmap_submit(pool: mc.Pool) -> None:
    assert pool.workers == 2
    assert pool.map(cf.square, range(1000)) == [x * x for x in range(1000)]
    assert sorted(pool.imap(cf.square, range(50), ordered=False)) == [x * x for x in range(50)]
    assert list(pool.imap(cf.square, iter(range(20)))) == [x * x for x in range(20)]
    assert pool.starmap(cf.add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.map(cf.square, []) == []
    assert pool.submit(cf.add, 1, b=5).result(timeout=60) == 6
    assert pool.schedule(cf.add, (2,), {"b": 3}).result(timeout=60) == 5


def test_many_tiny_items_go_in_batches(pool: mc.Pool) -> None:
    sent: list[int] = []
    send = pool._backend._send  # type: ignore[attr-defined]

    def counting(args: Any, record: Any) -> Any:
        sent.append(len(record.batch))
        return send(args, record)

    pool._backend._send = counting  # type: ignore[attr-defined]
    assert pool.map(cf.square, range(20_000)) == [x * x for x in range(20_000)]
    assert sum(sent) == 20_000 and len(sent) < 400  # not one remote task per item


def test_slow_items_stop_an_opening_batch_early(pool: mc.Pool) -> None:
    # A map opens with one batch per worker (no one-item probe: its round trip
    # would leave the workers idle); with slow items, each stops after about
    # 0.2 s and the rest of its items go out again in batches of their cost.
    sent: list[int] = []
    send = pool._backend._send  # type: ignore[attr-defined]

    def counting(args: Any, record: Any) -> Any:
        sent.append(len(record.batch))
        return send(args, record)

    pool._backend._send = counting  # type: ignore[attr-defined]
    start = time.monotonic()
    assert pool.map(cf.nap, [0.05] * 40) == [0.05] * 40
    assert sent[:2] == [20, 20] and sum(sent) > 40, sent
    assert time.monotonic() - start < 10
    # Big items open a few at a time (about 16 MB of them), not half the input each.
    sent.clear()
    arrays = [np.full(1 << 19, float(i)) for i in range(12)]  # 4 MB each
    assert pool.map(cf.first_of, arrays) == [float(i) for i in range(12)]
    assert max(sent) <= 4, sent


def test_errors_keep_their_type_and_remote_traceback(pool: mc.Pool) -> None:
    with pytest.raises(ValueError, match="three is not allowed") as info:
        pool.map(cf.fail_on_three, range(6))
    assert type(info.value.__cause__).__name__ == "RemoteTraceback"
    out = pool.map(cf.fail_on_three, range(6), on_error="collect")
    assert isinstance(out[3], mc.Failure) and out[3].index == 3
    assert [x for i, x in enumerate(out) if i != 3] == [0, 1, 2, 4, 5]
    assert pool.map(cf.fail_on_three, range(6), on_error="skip") == [0, 1, 2, 4, 5]


def test_retries(pool: mc.Pool, tmp_path: Path) -> None:
    future = pool.schedule(cf.flaky, (str(tmp_path / "n"), 2), retries=2)
    assert future.result(timeout=60) == 3
    out = pool.map(cf.flaky, [str(tmp_path / "m")], [5], retries=1, on_error="collect")
    assert isinstance(out[0], mc.Failure) and isinstance(out[0].exception, ConnectionError)


def test_a_timeout_does_not_block_the_caller(pool: mc.Pool) -> None:
    start = time.monotonic()
    out = pool.map(cf.nap, [0.05, 3.0, 0.05], timeout=0.5, on_error="collect")
    assert time.monotonic() - start < 2.5  # not the item's 3 s (Dask lets it run on)
    assert out[0] == 0.05 and out[2] == 0.05
    assert isinstance(out[1], mc.Failure) and isinstance(out[1].exception, mc.TaskTimeout)
    assert out[1].exception.index == 1


def test_a_big_argument_shared_by_many_items_is_sent_once(pool: mc.Pool) -> None:
    big = np.ones(1 << 18)  # 2 MB
    puts: list[Any] = []
    put = pool._backend._put  # type: ignore[attr-defined]
    pool._backend._put = lambda obj: puts.append(obj) or put(obj)  # type: ignore[attr-defined]
    items = [(big, i) for i in range(40)]
    assert pool.starmap(cf.scaled_sum, items, chunksize=4) == [
        float(1 << 18) * i for i in range(40)
    ]
    assert len(puts) == 1 and puts[0] is big


def test_worker_state_and_shared(engine: dict[str, Any]) -> None:
    with mc.Pool(**engine, init=cf.load_state, init_args=(7,)) as p:
        assert p.map(cf.state_value, range(8)) == [7] * 8
    data = np.arange(10.0)
    with mc.Pool(**engine, shared=data) as p:
        assert p.map(cf.shared_sum, range(4)) == [45.0] * 4


def test_task_graphs(pool: mc.Pool) -> None:
    square, add = mc.task(cf.square, pool=pool), mc.task(cf.add, pool=pool)
    left, right = square(3), square(4)
    assert add(left, right).result(timeout=60) == 25
    assert mc.graph(add(left, right)).counts()["done"] >= 2


def test_cancel(engine: dict[str, Any]) -> None:
    with mc.Pool(**engine) as p:
        running = p.submit(cf.nap, 3.0)
        time.sleep(1.0)
        killed = p.cancel(running, force=True)
        if engine["backend"] == "ray":
            assert killed
            with pytest.raises(CancelledError):
                running.result(timeout=30)
        else:
            assert not killed  # Dask cannot stop a running task
        p.terminate()


def test_a_pool_on_an_address_leaves_the_cluster_running(dask_client: Any) -> None:
    address = dask_client.scheduler.address
    with mc.Pool(backend="dask", address=address) as p:
        assert p.workers == 2
        assert p.map(cf.square, range(10)) == [x * x for x in range(10)]
    assert dask_client.submit(cf.square, 5).result(timeout=30) == 25


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"backend": "processes", "address": "tcp://x:1"},
            ValueError,
            "needs backend='celery', 'dask', 'ipyparallel' or 'ray', not 'processes'",
        ),
        (
            {"backend": "ray", "client": object()},
            ValueError,
            "needs backend='dask', 'ipyparallel' or 'spark'",
        ),
        ({"backend": "dask", "address": 5}, TypeError, "address must be"),
        ({"backend": "dask", "address": "tcp://x:1", "workers": 3}, ValueError, "workers=3"),
        ({"backend": "dask", "address": "a", "client": object()}, ValueError, "not both"),
        ({"backend": "dask", "exit": print}, ValueError, "exit= is not supported"),
        ({"backend": "ray", "max_tasks_per_worker": 3}, ValueError, "max_tasks_per_worker"),
    ],
)
def test_bad_options(options: dict[str, Any], error: type, match: str) -> None:
    if options.get("backend") == "dask" and "exit" in options:
        pytest.importorskip("distributed", reason="dask.distributed is not installed")
    with pytest.raises(error, match=match):
        mc.Pool(**options)


def test_task_results_stay_on_the_cluster(pool: mc.Pool) -> None:
    sent: list[Any] = []
    send = pool._backend._send  # type: ignore[attr-defined]

    def recording(args: Any, record: Any) -> Any:
        sent.append(args)
        return send(args, record)

    pool._backend._send = recording  # type: ignore[attr-defined]
    puts: list[Any] = []
    put = pool._backend._put  # type: ignore[attr-defined]
    pool._backend._put = lambda obj: puts.append(obj) or put(obj)  # type: ignore[attr-defined]
    make, total = mc.task(cf.make_big, pool=pool), mc.task(cf.total, pool=pool)
    big = make(1 << 20)  # 8 MB, made on a worker
    assert total(big).result(timeout=60) == 2.0 * (1 << 20)
    assert total(big, extra=big.result().sum() * 0 + 1.0).result(timeout=60) == 2.0 * (1 << 20) + 1
    assert total(arr=big).result(timeout=60) == 2.0 * (1 << 20)  # in kwargs too
    # The consumers' calls carried a reference to the array, never the array, and
    # it was not sent up again from here either.
    assert puts == []
    consumers = sent[1:]
    assert len(consumers) == 3
    assert all(
        not any(getattr(x, "nbytes", 0) > 1000 for x in _flatten(args)) for args in consumers
    )


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [y for x in obj for y in _flatten(x)]
    if isinstance(obj, dict):
        return [y for x in obj.values() for y in _flatten(x)]
    return [obj]


def test_top_level_map_on_an_address(dask_client: Any) -> None:
    address = dask_client.scheduler.address
    try:
        assert mc.map(cf.square, range(5), backend="dask", address=address) == [0, 1, 4, 9, 16]
        assert list(mc.imap(cf.square, range(3), backend="dask", address=address)) == [0, 1, 4]
    finally:
        mc.shutdown_default_pools()
    with pytest.raises(ValueError, match="'dask', 'ipyparallel' or 'ray'"):
        mc.map(cf.square, range(3), address=address)


# ------------------------------------------------------- found by a review


@pytest.mark.slow  # seconds long: make test-slow (CI runs it)
def test_timed_items_wait_their_turn_without_timing_out(engine: dict[str, Any]) -> None:
    with mc.Pool(**engine) as p:
        # 6 items of 0.4 s on 2 workers with a 1 s timeout: the later ones wait
        # in line longer than 1 s, yet none of them overstays once started.
        assert p.map(cf.nap, [0.4] * 6, timeout=1.0) == [0.4] * 6
        # With chunksize= too, the timeout is per item, and names the right one.
        out = p.map(cf.nap, [0.01, 3.0, 0.01, 0.01], timeout=0.8, chunksize=4, on_error="collect")
        assert out[0] == out[2] == out[3] == 0.01
        assert isinstance(out[1], mc.Failure) and out[1].exception.index == 1


def test_argument_types_are_kept(pool: mc.Pool) -> None:
    import collections

    point = collections.namedtuple("point", "x y")
    big = np.zeros(1 << 18)
    items = [point(1, 2), collections.OrderedDict(a=1), [1], (big, point(3, 4))]
    assert pool.map(cf.kind_of, items) == ["point", "OrderedDict", "list", "tuple"]


def test_an_array_changed_between_two_maps_is_sent_again(pool: mc.Pool) -> None:
    big = np.zeros(1 << 18)
    assert pool.map(cf.first_of, [big]) == [0.0]
    big[0] = 5.0
    assert pool.map(cf.first_of, [big]) == [5.0]


def test_a_failing_init_is_a_broken_pool(engine: dict[str, Any]) -> None:
    with (
        mc.Pool(**engine, init=cf.bad_init) as p,
        pytest.raises(mc.PoolBroken, match="no model here"),
    ):
        p.map(cf.square, range(3))


def test_shared_list_goes_whole(engine: dict[str, Any]) -> None:
    with mc.Pool(**engine, shared=list(range(5000))) as p:
        start = time.monotonic()
        assert p.map(cf.shared_len, range(3)) == [5000] * 3
        assert time.monotonic() - start < 5


def test_pool_primitives_on_the_cluster(pool: mc.Pool) -> None:
    # Built on the engine's own primitives (they work across machines), and
    # usable from the parent as well as from tasks.
    counter = pool.Counter()
    assert type(counter).__module__.endswith("_cluster_sync")  # not a machine-local one
    assert pool.map(cf.count_up, [counter] * 4, [25] * 4) == [25] * 4
    assert counter.value == 100
    value, lock = pool.Value("q", 0), pool.Lock()
    assert sum(pool.map(cf.locked_add, [(value, lock)] * 20)) == 20
    assert value.value == 20
    assert lock.acquire(timeout=5) and lock.locked()
    lock.release()
    queue = pool.Queue()
    assert pool.map(cf.produce, [(queue, 5), (queue, 5)]) == [5, 5]
    assert sorted(queue.get(timeout=10) for _ in range(10)) == sorted([*range(5), *range(5)])
    with pytest.raises(__import__("queue").Empty):
        queue.get(timeout=0.2)
    sem, inside, peak = pool.Semaphore(1), pool.Counter(), pool.Value("q", 0)
    assert sum(pool.map(cf.limited, [(sem, inside, peak)] * 4, chunksize=1)) == 4
    assert peak.value == 1


def test_pool_primitives_on_local_backends() -> None:
    with mc.Pool(1, backend="threads") as p:
        assert type(p.Lock()).__name__ == "Lock" and type(p.Counter()).__name__ == "Counter"
        with pytest.raises(ValueError, match="value"):
            p.Semaphore(-1)


def test_pool_primitives_match_the_local_methods(pool: mc.Pool) -> None:
    import queue as stdqueue

    q = pool.Queue(maxsize=1)
    q.put_nowait(cf.Point(1, 2))
    assert q.full()
    with pytest.raises(stdqueue.Full):
        q.put_nowait(3)  # at once, not a wait
    got = q.get(timeout=10)
    assert got == cf.Point(1, 2) and type(got) is cf.Point
    sem = pool.Semaphore(2)
    assert sem.acquire(timeout=5) and sem.get_value() == 1
    sem.release()
    with pytest.raises(ValueError, match="timeout"):
        sem.acquire(timeout=-1)
    counter = pool.Counter(5)
    with counter.get_lock():
        counter.value = counter.value * 2
    assert counter.increment() == 11


def test_a_script_functions_large_global_on_a_cluster(pool: mc.Pool) -> None:
    # Its large globals travel beside a script function's pickle (see _bigglobals);
    # on a cluster the function goes whole, and a rebound global is seen there too.
    namespace: dict[str, Any] = {"__name__": "__main__", "DATA": np.full(1 << 18, 1.0)}
    exec(compile("def f(x):\n    return float(DATA[0]) + x\n", "<cluster-big>", "exec"), namespace)
    f = namespace["f"]
    assert [pool.submit(f, i).result(timeout=60) for i in range(3)] == [1.0, 2.0, 3.0]
    namespace["DATA"] = np.full(1 << 18, 10.0)
    assert pool.map(f, range(3)) == [10.0, 11.0, 12.0]


class _RayThatRefuses:
    """A ``ray`` module whose ``init`` fails, as Ray's does on a refused connect."""

    def __init__(self) -> None:
        self.shut_down = False

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: Any) -> None:
        raise ConnectionError("refused")

    def shutdown(self) -> None:
        self.shut_down = True


def test_a_failed_ray_init_leaves_no_half_set_up_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    # A half set-up driver made the next pool's ray.init fail on Ray's stale state.
    fake = _RayThatRefuses()
    monkeypatch.setattr("manycore.backends.cluster_ray._import", lambda: fake)
    with pytest.raises(ConnectionError, match="refused"):
        get_backend("ray")(mc.BackendOptions(workers=2))
    assert fake.shut_down


def _listening(proc: Any) -> set[tuple[str, int]]:
    import psutil

    try:
        found = proc.net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return set()
    return {(c.laddr.ip, c.laddr.port) for c in found if c.status == psutil.CONN_LISTEN}


def test_the_local_dask_cluster_listens_on_loopback_only() -> None:
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    import psutil

    me = psutil.Process()
    others = {p.pid for p in me.children(recursive=True)}
    before = _listening(me)
    with mc.Pool(2, backend="dask") as p:
        assert p.map(cf.square, range(4)) == [0, 1, 4, 9]
        tree = [q for q in me.children(recursive=True) if q.pid not in others]
        sockets = _listening(me) - before
        for proc in tree:
            sockets |= _listening(proc)
    assert len(tree) >= 2 and sockets  # the scheduler (here), its dashboard, the workers
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
