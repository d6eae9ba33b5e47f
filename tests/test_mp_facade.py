"""``manycore.multiprocessing``: the multiprocessing tutorials' programs with only the
import changed, a killed worker failing only its result, and clear argument errors.
(CPython's own Pool tests run in tests/conformance/mp_pool_suite.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import helpers
import manycore as mc
import manycore.multiprocessing as mp

# The programs of the multiprocessing tutorials, each with its `import
# multiprocessing` / `from multiprocessing import ...` line swapped for manycore's.
PROGRAMS = {
    "producer_consumer": (
        """
        from manycore.multiprocessing import Process, Queue

        def producer(q):
            for i in range(5):
                q.put(i)
            q.put(None)

        def consumer(q, out):
            total = 0
            while (item := q.get()) is not None:
                total += item
            out.put(total)

        if __name__ == "__main__":
            q, out = Queue(), Queue()
            procs = [Process(target=producer, args=(q,)), Process(target=consumer, args=(q, out))]
            for p in procs:
                p.start()
            print(out.get(timeout=30))
            for p in procs:
                p.join()
        """,
        "10",
    ),
    "value_array": (
        """
        from manycore.multiprocessing import Process, Value, Array

        def f(n, a):
            n.value = 3.1415927
            for i in range(len(a)):
                a[i] = -a[i]

        if __name__ == "__main__":
            num = Value('d', 0.0)
            arr = Array('i', range(10))
            p = Process(target=f, args=(num, arr))
            p.start()
            p.join()
            print(num.value)
            print(arr[:])
        """,
        "3.1415927\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]",
    ),
    "lock_printing": (
        """
        from manycore.multiprocessing import Process, Lock

        def f(l, i):
            l.acquire()
            try:
                print('hello world', i, flush=True)
            finally:
                l.release()

        if __name__ == '__main__':
            lock = Lock()
            procs = [Process(target=f, args=(lock, num)) for num in range(5)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
        """,
        None,  # five lines, in any order: checked below
    ),
    "semaphore": (
        """
        import time
        from manycore.multiprocessing import Process, Semaphore, Value

        def work(sem, running, peak):
            with sem:
                with running.get_lock():
                    running.value += 1
                    peak.value = max(peak.value, running.value)
                time.sleep(0.2)
                with running.get_lock():
                    running.value -= 1

        if __name__ == "__main__":
            sem, running, peak = Semaphore(2), Value('i', 0), Value('i', 0)
            procs = [Process(target=work, args=(sem, running, peak)) for _ in range(5)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            print(peak.value)
        """,
        "2",
    ),
    "pipe": (
        """
        from manycore.multiprocessing import Process, Pipe

        def sender(conn):
            conn.send([42, None, 'hello'])
            conn.close()

        def receiver(conn, out):
            out.send(conn.recv()[2])

        if __name__ == '__main__':
            a, b = Pipe()
            r, w = Pipe(duplex=False)
            procs = [Process(target=sender, args=(a,)), Process(target=receiver, args=(b, w))]
            for p in procs:
                p.start()
            print(r.recv())
            for p in procs:
                p.join()
        """,
        "hello",
    ),
    "apply_async_exception": (
        """
        from manycore.multiprocessing import Pool, TimeoutError

        def f(x):
            if x == 5:
                raise ValueError("five")
            return x * x

        if __name__ == '__main__':
            with Pool(processes=2) as pool:
                print(pool.map(f, range(5)))
                print(pool.apply_async(f, (4,)).get(timeout=10))
                try:
                    pool.apply_async(f, (5,)).get(timeout=10)
                except ValueError as e:
                    print("raised", e)
                res = pool.apply_async(__import__("time").sleep, (10,))
                try:
                    res.get(timeout=1)
                except TimeoutError:
                    print("timed out")
        """,
        "[0, 1, 4, 9, 16]\n16\nraised five\ntimed out",
    ),
}


def run_program(tmp_path: Path, source: str) -> str:
    script = tmp_path / "tutorial.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_tutorial_program_runs_with_only_the_import_changed(tmp_path: Path, name: str) -> None:
    source, expected = PROGRAMS[name]
    out = run_program(tmp_path, source)
    if expected is None:
        assert sorted(out.splitlines()) == [f"hello world {i}" for i in range(5)]
    else:
        assert out == expected


def test_lambdas_and_closures_without_a_main_guard(tmp_path: Path) -> None:
    source = """
        import manycore.multiprocessing as multiprocessing

        k = 10
        with multiprocessing.Pool(2) as pool:
            print(pool.map(lambda x: x + k, range(3)), pool.apply(lambda: "ok"))
        """
    assert run_program(tmp_path, source) == "[10, 11, 12] ok"


@pytest.fixture(scope="module")
def pool() -> mp.Pool:
    p = mp.Pool(2)
    yield p
    p.terminate()
    p.join()


def test_a_killed_worker_fails_only_its_result(pool: mp.Pool) -> None:
    bad = pool.apply_async(helpers.crash_on, (3,))
    good = pool.apply_async(helpers.crash_on, (4,))
    with pytest.raises(mc.WorkerCrashed):
        bad.get(timeout=30)
    assert not bad.successful()
    assert good.get(timeout=30) == 40
    crashed_map = pool.map_async(helpers.crash_on, range(6), chunksize=1)
    with pytest.raises(mc.WorkerCrashed):
        crashed_map.get(timeout=30)
    assert pool.map(helpers.crash_on, [1, 2]) == [10, 20]  # the pool goes on


def test_results_and_callbacks(pool: mp.Pool) -> None:
    got: list[object] = []
    assert pool.map_async(helpers.square, [1, 2], callback=got.append).get(timeout=30) == [1, 4]
    res = pool.apply_async(helpers.fail_on, (7,), error_callback=got.append)
    with pytest.raises(ValueError, match="bad input 7"):
        res.get(timeout=30)
    assert got[0] == [1, 4] and isinstance(got[1], ValueError)
    assert res.ready() and not res.successful()
    assert pool.starmap(helpers.add, [(1, 2), (3, 4)]) == [3, 7]
    assert sorted(pool.imap_unordered(helpers.square, range(4), 2)) == [0, 1, 4, 9]
    it = pool.imap(helpers.sleep_then, [5.0])
    with pytest.raises(mp.TimeoutError):
        it.next(timeout=0.1)


def test_pending_result_is_not_ready(pool: mp.Pool) -> None:
    res = pool.apply_async(helpers.sleep_then, (0.5,))
    with pytest.raises(ValueError, match="not ready"):
        res.successful()
    res.wait()
    assert res.successful() and res.get() == 0.5


def test_close_join_and_terminate() -> None:
    p = mp.Pool(1)
    with pytest.raises(ValueError, match="Pool is still running"):
        p.join()
    res = p.apply_async(helpers.square, (3,))
    p.close()
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply_async(helpers.square, (3,))
    p.join()
    assert res.get(timeout=0) == 9
    with mp.Pool(1) as q:
        slow = q.map_async(helpers.sleep_then, [30.0] * 4, chunksize=1)
        time.sleep(0.2)
    began = time.monotonic()
    q.join()  # __exit__ terminated it: no waiting for the sleeps
    assert time.monotonic() - began < 10
    with pytest.raises(BaseException):  # noqa: B017  # failed, not left hanging
        slow.get(timeout=10)
    with pytest.raises(ValueError, match="Pool not running"), q:
        pass


def note_pid(folder: str) -> None:
    Path(folder, str(os.getpid())).touch()


@pytest.mark.parametrize("method", mc.START_METHODS)
def test_initializer_runs_in_every_worker_of_a_pool_closed_at_once(
    tmp_path: Path, method: str
) -> None:
    # The pool ends before its workers have started: each still runs its init,
    # as multiprocessing.Pool's do (the workers used to exit on the closed pipe).
    p = mp.Pool(2, note_pid, (str(tmp_path),), context=mp.get_context(method))
    p.close()
    p.join()
    assert len(list(tmp_path.iterdir())) == 2


def test_maxtasksperchild_replaces_workers() -> None:
    with mp.Pool(1, maxtasksperchild=2) as p:
        pids = {p.apply(os.getpid) for _ in range(6)}
    assert len(pids) >= 3


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        (lambda: mp.Pool(0), ValueError, "processes"),
        (lambda: mp.Pool(-1), ValueError, "processes"),
        (lambda: mp.Pool("2"), TypeError, "processes"),  # type: ignore[arg-type]
        (lambda: mp.Pool(1, initializer=1), TypeError, "initializer"),  # type: ignore[arg-type]
        (lambda: mp.Pool(1, maxtasksperchild=0), ValueError, "maxtasksperchild"),
        (lambda: mp.Pool(1, maxtasksperchild=0.5), ValueError, "maxtasksperchild"),  # type: ignore[arg-type]
    ],
)
def test_bad_pool_arguments_name_the_argument(call, error, named) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=named):
        call()


@pytest.mark.parametrize(
    ("method", "args", "error", "named"),
    [
        ("apply_async", (1,), TypeError, "func"),
        ("apply_async", (helpers.square, 5), TypeError, "args"),
        ("apply_async", (helpers.square, (1,), [1]), TypeError, "kwds"),
        ("map", (helpers.square, [1], 0), ValueError, "[Cc]hunksize"),
        ("imap", (helpers.square, [1], 0), ValueError, "[Cc]hunksize"),
        ("imap", (helpers.square, [1], "2"), TypeError, "chunksize"),
    ],
)
def test_bad_call_arguments_name_the_argument(  # type: ignore[no-untyped-def]
    pool: mp.Pool, method, args, error, named
) -> None:
    with pytest.raises(error, match=named):
        getattr(pool, method)(*args)


def test_the_module_offers_what_the_tutorials_use() -> None:
    import multiprocessing

    for name in ("Process", "Queue", "Pipe", "Value", "Array", "Lock", "Semaphore", "Event"):
        assert getattr(mp, name) is getattr(multiprocessing, name), name
    assert mp.Manager is multiprocessing.Manager and mp.cpu_count() >= 1
    assert mp.current_process().name == "MainProcess"
    assert mp.TimeoutError is multiprocessing.TimeoutError
    assert set(mp.__all__) <= set(dir(mp))
