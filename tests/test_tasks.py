"""@mc.task graphs: dependencies, failures, retries, cancellation, nesting, waiting."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

import manycore as mc
import taskfns as tf
from manycore._tasks._nodes import TaskNode, TaskState


@pytest.fixture
def t(pool: mc.Pool) -> dict[str, mc.Task]:  # type: ignore[type-arg]
    """The test functions as tasks on this case's pool."""
    names = ["load", "double", "add", "total", "square", "merge_all", "fail", "slow", "record"]
    names += ["flaky", "fan_in", "fan_in_waiting", "where"]
    return {name: mc.task(pool=pool)(getattr(tf, name)) for name in names}


def test_diamond(t: dict[str, mc.Task]) -> None:  # type: ignore[type-arg]
    source = t["load"](4)
    left, right = t["double"](source), t["double"](source)
    top = t["total"](left, right, source)
    assert isinstance(top, mc.TaskFuture)
    assert top.result(timeout=60) == 12 + 12 + 6
    g = mc.graph(top)
    keys = {node.name: key for key, node in g.nodes.items() if node.name != "double"}
    doubles = [key for key, node in g.nodes.items() if node.name == "double"]
    assert len(g.nodes) == 4 and len(doubles) == 2
    expected = {(keys["load"], d) for d in doubles} | {(d, keys["total"]) for d in doubles}
    expected.add((keys["load"], keys["total"]))
    assert set(g.edges) == expected
    assert g.counts() == {"done": 4}


@pytest.mark.slow  # seconds long: make test-slow (CI runs it)
def test_fan_out_fan_in_of_a_thousand(t: dict[str, mc.Task]) -> None:  # type: ignore[type-arg]
    squares = [t["square"](i) for i in range(1000)]
    pairs = [t["add"](squares[i], squares[i + 1]) for i in range(0, 1000, 2)]
    top = t["total"](*pairs)
    assert top.result(timeout=120) == sum(i * i for i in range(1000))
    assert len(mc.graph(top).nodes) == 1501


def test_futures_inside_lists_and_dicts(t: dict[str, mc.Task]) -> None:  # type: ignore[type-arg]
    a, b = t["square"](3), t["square"](4)
    out = t["merge_all"]([a, b, 1], {"more": (a, 2), "one": b})
    assert out.result(timeout=60) == 9 + 16 + 1 + 9 + 2 + 16
    assert {n.name for n in mc.graph(out).nodes.values()} == {"square", "merge_all"}


def test_a_failure_fails_everything_downstream_without_running_it(
    t: dict[str, mc.Task],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    ran = tmp_path / "ran"
    bad = t["fail"]("no such file")
    middle = t["record"](str(ran), bad)
    top = t["add"](middle, 1)
    other = t["square"](5)  # independent: unaffected
    with pytest.raises(mc.UpstreamFailed) as info:
        top.result(timeout=60)
    err = info.value
    assert "'add'" in str(err) and "'record'" in str(err)
    assert err.task == "record" and isinstance(err.__cause__, mc.UpstreamFailed)
    assert err.__cause__.task == "fail"
    assert isinstance(err.__cause__.__cause__, ValueError)
    assert str(err.__cause__.__cause__) == "no such file"
    assert other.result(timeout=60) == 25
    assert not ran.exists()
    states = {n.name: n.state for n in mc.graph([top, other]).nodes.values()}
    assert states == {"fail": "failed", "record": "failed", "add": "failed", "square": "done"}


def test_retries_inside_a_graph(t: dict[str, mc.Task], tmp_path: Path) -> None:  # type: ignore[type-arg]
    counter = tmp_path / "attempts"
    flaky = t["flaky"].options(retries=2, retry_on=ConnectionError)
    assert t["add"](flaky(str(counter), 2), 10).result(timeout=60) == 13
    gives_up = t["flaky"].options(retries=1)(str(tmp_path / "other"), 5)
    err = t["add"](gives_up, 1).exception(timeout=60)
    assert isinstance(err, mc.UpstreamFailed) and isinstance(err.__cause__, ConnectionError)
    assert str(err.__cause__) == "attempt 2 failed"


def test_cancel_cancels_everything_downstream(pool: mc.Pool, tmp_path: Path) -> None:
    slow = mc.task(pool=pool)(tf.slow)
    record = mc.task(pool=pool)(tf.record)
    first = slow(1, 0.5)
    second = record(str(tmp_path / "second"), first)
    third = record(str(tmp_path / "third"), second)
    assert second.cancel()
    assert second.cancelled() and third.cancelled()
    with pytest.raises(CancelledError):
        third.result(timeout=30)
    assert first.result(timeout=30) == 1  # upstream is not touched
    time.sleep(0.1)
    assert not (tmp_path / "second").exists() and not (tmp_path / "third").exists()
    assert {n.state for n in mc.graph(third).nodes.values()} == {"done", "cancelled"}


def test_nested_tasks_on_one_worker_do_not_deadlock(backend: tuple[str, str | None]) -> None:
    name, method = backend
    with mc.Pool(1, backend=name, start_method=method) as pool:
        outer = mc.task(pool=pool)(tf.fan_in)
        waiting = mc.task(pool=pool)(tf.fan_in_waiting)
        assert outer(20).result(timeout=60) == sum(i * i for i in range(20))
        assert waiting(10).result(timeout=60) == sum(i * i for i in range(10))
        # Several outer tasks, each waiting for its own inner ones.
        many = [outer(5) for _ in range(4)]
        assert [f.result(timeout=60) for f in many] == [30] * 4


def test_nested_tasks_run_on_the_pool_of_their_caller() -> None:
    with mc.Pool(4, backend="threads") as pool:
        outer = mc.task(pool=pool)(tf.fan_in)
        assert outer(50).result(timeout=60) == sum(i * i for i in range(50))
        names = mc.task(pool=pool)(tf.inner_thread_names)(20).result(timeout=60)
        assert len(names) == 20 and all(n.startswith("manycore-thread") for n in names)


def test_wait_and_as_completed(t: dict[str, mc.Task]) -> None:  # type: ignore[type-arg]
    futures = [t["square"](i) for i in range(10)]
    done, not_done = mc.wait(futures, timeout=60)
    assert len(done) == 10 and not not_done
    assert sorted(f.result() for f in mc.as_completed(futures, timeout=60)) == [
        i * i for i in range(10)
    ]
    bad = t["fail"]("x")
    done, _ = mc.wait([bad, t["slow"](1, 0.05)], timeout=60, return_when="FIRST_EXCEPTION")
    assert bad in done


SERIAL = mc.Pool(1, backend="serial")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: mc.wait(3), TypeError, "iterable of futures"),
        (lambda: mc.wait([1]), TypeError, "got an item of type int"),
        (lambda: mc.wait([], return_when="SOON"), ValueError, "return_when"),
        (lambda: mc.wait([], timeout=-1), ValueError, "timeout"),
        (lambda: mc.as_completed(mc.task(abs)(1)), TypeError, "not a single future"),
        (lambda: mc.task(timeout=0)(abs), ValueError, "timeout"),
        (lambda: mc.task(retries=-1)(abs), ValueError, "retries"),
        (lambda: mc.task(backend="gpu")(abs), ValueError, "backend"),
        (lambda: mc.task(pool="mine")(abs), TypeError, "pool must be a manycore.Pool"),
        (
            lambda: mc.task(backend="threads", pool=mc.Pool(1, backend="serial"))(abs),
            ValueError,
            "not both",
        ),
        (lambda: mc.task(3), TypeError, "callable"),
        (lambda: mc.task(abs, retries=-2), ValueError, "retries"),
        (lambda: mc.task(color="red"), TypeError, "unexpected options: color"),
        (lambda: mc.task(abs).options(colour=1), TypeError, "unexpected options: colour"),
        (lambda: mc.graph(5), TypeError, "task future"),
    ],
)
def test_bad_arguments_are_named(call, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        call()


def test_a_module_level_task_pickles_by_reference() -> None:
    assert pickle.loads(pickle.dumps(tf.summed)) is tf.summed
    local = mc.task(tf.square)  # not reachable by name: travels by value
    copy = pickle.loads(pickle.dumps(local))
    assert copy is not local and copy.fn is tf.square and copy.name == "square"


def test_module_level_task_on_the_default_pool() -> None:
    # Options from the decorator; nested futures; the default processes pool.
    out = tf.summed(tf.square_task(3), [1, 2], tf.square_task(4))
    assert out.result(timeout=60) == 9 + 3 + 16
    assert out.task.retries == 1 and out.node.name == "sum of parts"


def test_illegal_state_moves_are_refused() -> None:
    node = TaskNode(1, "x", [])
    node.move(TaskState.READY)
    with pytest.raises(RuntimeError, match="illegal move READY -> DONE"):
        node.move(TaskState.DONE)
    node.move(TaskState.CANCELLED)
    with pytest.raises(RuntimeError, match="CANCELLED -> READY"):
        node.move(TaskState.READY)


def test_task_futures_can_be_awaited() -> None:
    with mc.Pool(2, backend="threads") as pool:
        square = mc.task(pool=pool)(tf.square)

        async def main() -> int:
            return await square(7) + await square(square(2))

        assert asyncio.run(main()) == 49 + 16


def test_a_task_started_from_many_threads() -> None:
    with mc.Pool(2, backend="threads") as pool:
        add = mc.task(pool=pool)(tf.add)
        results: list[int] = []

        def chain(start: int) -> None:
            f = add(start, 0)
            for _ in range(50):
                f = add(f, 1)
            results.append(f.result(timeout=60))

        threads = [threading.Thread(target=chain, args=(i * 1000,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert sorted(results) == [50, 1050, 2050, 3050]


def test_a_long_chain_does_not_recurse() -> None:
    with mc.Pool(1, backend="serial") as pool:
        add = mc.task(pool=pool)(tf.add)
        f = add(0, 0)
        for _ in range(3000):
            f = add(f, 1)
        assert f.result(timeout=60) == 3000


def test_graph_files(tmp_path: Path) -> None:
    with mc.Pool(2, backend="threads") as pool:
        square, add, fail = (mc.task(pool=pool)(f) for f in (tf.square, tf.add, tf.fail))
        good = add(square(2), square(3))
        bad = add(fail("broken <input>"), good)
        mc.wait([good, bad], timeout=60)
        g = mc.graph([good, bad], tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count('class="task done"') == 3 and svg.count('class="task failed"') == 2
    assert svg.count('class="edge"') == len(g.edges) == 4
    assert "broken &lt;input&gt;" in svg  # the error, escaped, as the failed box's tooltip
    dot = Path(g.save(tmp_path / "g.dot")).read_text()
    assert dot.startswith("digraph tasks {") and dot.count("->") == 4
    assert mc.graph(good).counts() == {"done": 3}
    with pytest.raises(ValueError, match="format"):
        g.save(tmp_path / "g.bmp")
    if __import__("shutil").which("dot") is None:
        with pytest.raises(RuntimeError, match="Graphviz"):
            g.save(tmp_path / "g.png")
    else:
        assert (Path(g.save(tmp_path / "g.png")).read_bytes()[:4]) == b"\x89PNG"


def test_graph_shows_running_and_pending() -> None:
    with mc.Pool(1, backend="threads") as pool:
        slow, add = mc.task(pool=pool)(tf.slow), mc.task(pool=pool)(tf.add)
        first = slow(1, 0.4)
        later = add(first, 1)
        deadline = time.monotonic() + 10
        while mc.graph(later).counts().get("running") != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mc.graph(later).counts() == {"running": 1, "pending": 1}
        assert later.result(timeout=30) == 2


# ------------------------------------------------- long chains, waits, corners


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_a_failure_travels_down_a_long_chain(kind: str) -> None:
    with mc.Pool(2, backend=kind) as pool:
        add, fail = mc.task(pool=pool)(tf.add), mc.task(pool=pool)(tf.fail)
        f = fail("root cause")
        for _ in range(500):
            f = add(f, 1)
        err = f.exception(timeout=60)
    assert isinstance(err, mc.UpstreamFailed)
    assert len(str(err)) < 400  # names its input and the first error, once
    assert "first error: ValueError: root cause" in str(err)
    assert isinstance(err.first, ValueError)


def test_cancelling_the_head_of_a_long_chain(pool: mc.Pool) -> None:
    from concurrent.futures import Future

    add = mc.task(pool=pool)(tf.add)
    gate: Future[int] = Future()  # any future is an input; this one we settle
    head = add(gate, 1)
    f = head
    for _ in range(1000):
        f = add(f, 1)
    assert head.cancel()
    assert f.cancelled()  # at once, 1,000 tasks down
    gate.set_result(1)
    other = add(gate, 2)  # the input itself is fine
    assert other.result(timeout=30) == 3


def test_waiting_on_a_long_chain_inside_a_pool() -> None:
    with mc.Pool(1, backend="threads") as pool:
        chained = mc.task(pool=pool)(tf.chain_inside)
        assert chained(2000).result(timeout=120) == 2000


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_first_completed_inside_a_one_worker_pool(kind: str) -> None:
    with mc.Pool(1, backend=kind) as pool:
        first = mc.task(pool=pool)(tf.first_of)
        assert first(4).result(timeout=30) >= 1


def test_a_wait_inside_a_task_keeps_its_timeout() -> None:
    with mc.Pool(1, backend="threads") as pool:
        waiter = mc.task(pool=pool)(tf.wait_with_timeout)
        start = time.monotonic()
        # Past its deadline a wait runs nothing in place: it times out at once.
        assert waiter(0.0).result(timeout=30) == "timed out"
        assert time.monotonic() - start < 0.9  # not the nested task's 1 s
        # Within it, the one worker runs the nested task itself (it has to:
        # nobody else would), and that may take longer than the timeout.
        assert waiter(0.3).result(timeout=30) == "finished"


def test_tasks_of_another_pool_are_not_run_in_the_waiting_thread() -> None:
    import os

    with mc.Pool(2) as procs, mc.Pool(1, backend="threads") as threads:
        outer = mc.task(pool=threads)(tf.pids_of_nested)
        pids = outer(6, procs).result(timeout=60)
    assert os.getpid() not in pids and pids <= set(procs.pids()) | pids


def test_serial_tasks_do_not_hold_up_other_pools() -> None:
    with mc.Pool(1, backend="serial") as serial, mc.Pool(1, backend="threads") as threads:
        long_one = mc.task(pool=serial)(tf.slow)(1, 1.0)
        time.sleep(0.05)
        start = time.monotonic()
        assert mc.task(pool=threads)(tf.square)(3).result(timeout=30) == 9
        assert time.monotonic() - start < 0.5
        assert long_one.result(timeout=30) == 1


def test_a_task_of_a_task_keeps_and_updates_its_options() -> None:
    with mc.Pool(1, backend="threads") as pool:
        wrapped = mc.task(tf.summed, pool=pool, timeout=5)
        assert wrapped.fn is tf.summed.fn and wrapped.pool is pool
        assert (wrapped.timeout, wrapped.retries, wrapped.name) == (5.0, 1, "sum of parts")
        assert wrapped(1, 2).result(timeout=30) == 3

        def labelled(x: int) -> int:
            return x

        labelled.name = "not an option"  # type: ignore[attr-defined]
        labelled.timeout = "soon"  # type: ignore[attr-defined]
        t = mc.task(labelled)
        assert (t.name, t.timeout) == ("labelled", None)


def test_default_pools_are_looked_up_when_a_task_is_sent() -> None:
    square = mc.task(tf.square, backend="threads")
    gate = mc.task(tf.slow, backend="threads")(1, 0.2)
    later = square(gate)
    mc.shutdown_default_pools()  # the pool it would have used is gone meanwhile
    assert later.result(timeout=30) == 1


def test_waits_accept_an_infinite_timeout() -> None:
    f = mc.task(tf.square, backend="threads")(2)
    assert mc.wait([f], timeout=float("inf")).done == {f}
    assert list(mc.as_completed([f], timeout=float("inf"))) == [f]


def test_a_task_is_pickled_once() -> None:
    first = tf.summed._pickled_call()
    assert tf.summed._pickled_call() is first  # by reference

    def local(x: int) -> int:
        return x

    by_value = mc.task(local)
    assert by_value._pickled_call() is by_value._pickled_call()


def test_graph_text_is_escaped(tmp_path: Path) -> None:
    with mc.Pool(1, backend="threads") as pool:
        bad = mc.task(tf.fail, pool=pool, name='C:\\new "x"')("ctrl \x1b char <b>")
        bad.exception(timeout=30)
    g = mc.graph(bad)
    assert 'label="C:\\\\new \\"x\\" #' in g.dot()
    import xml.etree.ElementTree as ET

    root = ET.fromstring(g.svg())  # well-formed, control character and all
    assert "ctrl" in "".join(root.itertext())


def test_async_tasks_run_on_the_asyncio_backend() -> None:
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 2

    with mc.Pool(backend="asyncio") as aio, mc.Pool(2, backend="threads") as threads:
        fetched = mc.task(fetch, pool=aio)
        add = mc.task(tf.add, pool=threads)
        assert add(fetched(1), fetched(2)).result(timeout=30) == 6
    refused = mc.task(fetch, backend="threads")(1).exception(timeout=30)
    assert isinstance(refused, TypeError) and "backend='asyncio'" in str(refused)
