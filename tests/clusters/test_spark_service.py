"""backend="spark" on a local Spark (``local[2]``, its JVM and Python workers
separate processes): a session the tests start and pass (``client=``), and one
the pool starts and owns (in a process of its own: Spark allows one context per
process). The shared backend suite runs on it too, in a pytest of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clusterfns as cf
import manycore as mc
from clusters import rayfns as fns

from ._spark_service import need_spark, spark_session

__all__ = ["spark_session"]  # the fixture, used by name

# py4j leaves the sockets of the driver's gateway connections to the garbage
# collector (one per thread that ran a job): not manycore's to close.
IGNORE_PY4J = ["ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"]
pytestmark = [pytest.mark.filterwarnings(w) for w in IGNORE_PY4J]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}


@pytest.fixture
def pool(spark_session: Any) -> Iterator[mc.Pool]:
    p = mc.Pool(backend="spark", client=spark_session)
    try:
        yield p
    finally:
        p.shutdown(cancel_pending=True)


def _kinds(out: list[Any]) -> list[Any]:
    return [type(x.exception).__name__ if isinstance(x, mc.Failure) else x for x in out]


@pytest.mark.timeout(120)
def test_a_given_session_runs_maps_and_is_left_running(spark_session: Any) -> None:
    with mc.Pool(backend="spark", client=spark_session) as p:
        assert p.workers == 2
        assert p.map(fns.square, range(100)) == [x * x for x in range(100)]
        assert p.map(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]
    # The pool stopped nothing of the caller's.
    assert spark_session.sparkContext.parallelize(range(4), 2).sum() == 6


@pytest.mark.timeout(120)
def test_errors_keep_their_type_retries_and_on_error(pool: mc.Pool, tmp_path: Path) -> None:
    with pytest.raises(fns.Custom, match="item 4") as info:
        pool.map(fns.raise_on, range(8))
    assert type(info.value) is fns.Custom
    assert pool.map(fns.raise_on, range(8), on_error="skip") == [0, 1, 2, 3, 5, 6, 7]
    out = pool.map(fns.raise_on, range(8), on_error="collect")
    assert isinstance(out[4], mc.Failure) and type(out[4].exception) is fns.Custom
    assert pool.map(fns.fail_first, [str(tmp_path / "m")], retries=1) == ["second try"]
    out = pool.map(fns.fail_first, [str(tmp_path / "n")], retries=0, on_error="collect")
    assert isinstance(out[0], mc.Failure) and type(out[0].exception) is ConnectionError


@pytest.mark.timeout(180)
def test_a_hang_past_its_timeout_fails_only_its_item(pool: mc.Pool) -> None:
    out = pool.map(fns.hang_on, range(14), timeout=2, on_error="collect")
    assert _kinds(out) == [0, 1, 2, "TaskTimeout", *range(4, 11), "TaskTimeout", 12, 13]
    # The slots came back (Spark killed the Python workers that slept): the
    # pool runs untimed and timed maps after, on both cores.
    assert pool.map(fns.square, range(50)) == [x * x for x in range(50)]
    start = time.monotonic()
    assert pool.map(cf.nap, [1.0] * 4, timeout=10) == [1.0] * 4
    assert time.monotonic() - start < 8


@pytest.mark.timeout(120)
def test_a_killed_python_worker_fails_only_its_item(pool: mc.Pool) -> None:
    out = pool.map(fns.die_on, range(12), on_error="collect")
    assert _kinds(out) == [*range(5), "WorkerCrashed", *range(6, 12)]
    assert "crashed" in str(out[5].exception)
    assert pool.map(fns.square, range(10)) == [x * x for x in range(10)]


@pytest.mark.timeout(120)
def test_a_forced_cancel_stops_the_job(pool: mc.Pool) -> None:
    future = pool.submit(fns.hang_on, 3)
    time.sleep(2.0)
    assert future.cancel() or pool.cancel(future, force=True)  # type: ignore[attr-defined]
    assert pool.map(fns.square, range(10), timeout=20) == [x * x for x in range(10)]


@pytest.mark.timeout(120)
def test_worker_state_and_shared_objects(spark_session: Any) -> None:
    with mc.Pool(backend="spark", client=spark_session, init=cf.load_state, init_args=(7,)) as p:
        assert p.map(cf.state_value, range(6)) == [7] * 6
    big = list(range(300_000))  # sent once, as a broadcast
    with mc.Pool(backend="spark", client=spark_session, shared=big) as p:
        assert p.map(cf.shared_len, range(6)) == [300_000] * 6
    with (
        mc.Pool(backend="spark", client=spark_session, init=cf.bad_init) as p,
        pytest.raises(mc.PoolBroken),
    ):
        p.map(fns.square, range(3))


@pytest.mark.timeout(120)
def test_a_task_graph(pool: mc.Pool) -> None:
    @mc.task
    def double(x: int) -> int:
        return 2 * x

    @mc.task
    def add(a: int, b: int) -> int:
        return a + b

    with pool:
        assert add(double(3), double(4)).result(timeout=60) == 14


@pytest.mark.timeout(120)
def test_progress_and_stats(pool: mc.Pool) -> None:
    pool.stats(reset=True)
    out = pool.map(fns.square, range(40), progress=True)
    assert out == [x * x for x in range(40)]
    stats = pool.stats()
    assert stats.items == 40 and stats.failed == 0, stats


OWNED = """
import manycore as mc, psutil, time
start = time.monotonic()
with mc.Pool(backend="spark", workers=2) as p:
    up = time.monotonic() - start
    assert p.workers == 2
    assert p.map(abs, range(-50, 0)) == list(range(50, 0, -1))
with mc.Pool(backend="spark", workers=2) as p:  # a second one, after
    assert p.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
jvms = [c for c in psutil.Process().children(recursive=True) if c.is_running()
        and c.status() != psutil.STATUS_ZOMBIE and "org.apache.spark" in " ".join(c.cmdline())]
print("OK", round(up, 1), len(jvms))
"""


@pytest.mark.timeout(180)
def test_a_pool_starts_and_stops_its_own_local_spark() -> None:
    need_spark()
    done = subprocess.run(
        [sys.executable, "-c", OWNED], env=ENV, capture_output=True, text=True, timeout=150
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("OK ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    assert lines[0].split()[2] == "0", lines  # no JVM left once the pool is shut down


NO_JAVA = """
import manycore as mc
try:
    mc.Pool(backend="spark", workers=2)
except Exception as e:
    print("ERR", type(e).__name__, e)
"""


@pytest.mark.timeout(60)
def test_no_java_is_named() -> None:
    need_spark()
    env = {**ENV, "PATH": "/nonexistent", "JAVA_HOME": ""}
    done = subprocess.run(
        [sys.executable, "-c", NO_JAVA], env=env, capture_output=True, text=True, timeout=50
    )
    assert "ERR RuntimeError" in done.stdout and "Java" in done.stdout, done.stdout + done.stderr


SHARED_SUITE = [
    "test_map.py",
    "test_errors.py",
    "test_on_error.py",
    "test_progress.py",
    "test_retries.py",
    "test_stats.py",
    "test_submit.py",
    "test_tasks.py",
]


@pytest.mark.timeout(600)
def test_the_shared_backend_suite() -> None:
    """The pool fixture's cases with backend="spark" (MANYCORE_TEST_SPARK=1), in
    a pytest of its own: Spark allows one context per process."""
    need_spark()
    files = [str(ROOT / "tests" / name) for name in SHARED_SUITE]
    # (Not the graph of 1,500 tasks: each task is a Spark job of 30-150 ms, and the
    # case gives it 120 s; docs/cluster.md says so.)
    select = "spark and not fan_out_fan_in_of_a_thousand"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", select]
    command += [f"-W{w}" for w in IGNORE_PY4J]
    done = subprocess.run(
        [*command, "--timeout", "120", *files],
        env={**ENV, "MANYCORE_TEST_SPARK": "1"},
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert done.returncode == 0, done.stdout[-8000:]
    found = re.search(r"(\d+) passed", done.stdout.strip().splitlines()[-1])
    assert found is not None and int(found.group(1)) >= 60, done.stdout[-2000:]
