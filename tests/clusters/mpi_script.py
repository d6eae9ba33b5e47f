"""A user's script on backend="mpi", run by tests/clusters/test_mpi.py in both
ways: ``python mpi_script.py CASE DIR`` (the pool spawns 2 ranks) and ``mpiexec
-n 3 python -m mpi4py.futures mpi_script.py CASE DIR`` (the job's 2 other ranks).
Each case prints ``OK <case>`` when its checks hold. Its functions live in
``__main__`` (and lambdas): they travel by value."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import manycore as mc

# Under mpiexec the job's ranks are the workers: the pool is given no count.
WORKERS = None if os.environ.get("OMPI_COMM_WORLD_SIZE") else 2


def pool(**options: object) -> mc.Pool:
    return mc.Pool(WORKERS, backend="mpi", **options)


def crash_on_three(x: int) -> int:
    if x == 3:
        os._exit(7)  # as a segfault would: the worker dies mid-item
    return x


def late_write(path: str) -> None:
    time.sleep(3)
    Path(path).write_text("ran on")


def fail_once(x: int, folder: str) -> int:
    """Fails (or crashes, for 5) the first time it sees ``x``, then works."""
    marker = Path(folder, f"seen-{x}")
    if not marker.exists():
        marker.write_text("")
        if x == 5:
            os._exit(9)
        raise ValueError(f"first try of {x}")
    return x * 10


def case_basics(folder: str) -> None:
    with pool() as p:
        assert p.workers == 2, p.workers
        assert p.map(lambda x: x * 2, range(50)) == [x * 2 for x in range(50)]
        assert p.submit(pow, 2, 10).result() == 1024


def case_timeout(folder: str) -> None:
    with pool() as p:
        started = time.monotonic()
        path = str(Path(folder, "late"))
        out = p.map(late_write, [path], timeout=1, on_error="collect")
        assert isinstance(out[0], mc.Failure), out
        assert isinstance(out[0].exception, mc.TaskTimeout), out
        assert time.monotonic() - started < 2.9, "the timeout came late"
        time.sleep(3.5)
        assert not Path(path).exists(), "the timed-out task ran on"
        slow = p.map(time.sleep, [0, 3600, 0, 0, 3600, 0], timeout=2, on_error="collect")
        failed = [i for i, o in enumerate(slow) if isinstance(o, mc.Failure)]
        assert failed == [1, 4], slow
        assert all(isinstance(slow[i].exception, mc.TaskTimeout) for i in failed)
        assert p.map(abs, [-1, -2, -3]) == [1, 2, 3]  # usable after


def case_crash(folder: str) -> None:
    with pool() as p:
        out = p.map(crash_on_three, range(8), chunksize=4, on_error="collect")
        failed = [i for i, o in enumerate(out) if isinstance(o, mc.Failure)]
        assert failed == [3], out
        assert isinstance(out[3].exception, mc.WorkerCrashed), out
        assert p.map(abs, [-4, -5]) == [4, 5]  # the rank lived on


def case_retries(folder: str) -> None:
    with pool(retries=1) as p:
        assert p.map(fail_once, range(8), [folder] * 8) == [x * 10 for x in range(8)]


def case_state(folder: str) -> None:
    def init(base: int) -> tuple[int, int]:
        return (base, os.getpid())

    with pool(init=init, init_args=(7,), shared={"k": 5}) as p:
        seen = p.map(lambda _: (mc.worker_state(), os.getpid(), mc.shared()["k"]), range(40))
        assert all(state == (7, pid) and k == 5 for state, pid, k in seen), seen
        assert len({pid for _, pid, _ in seen}) <= 2, seen


CASES = {
    name[len("case_") :]: fn for name, fn in dict(globals()).items() if name.startswith("case_")
}

if __name__ == "__main__":
    for case in sys.argv[1].split(","):
        CASES[case](sys.argv[2])
        print("OK", case, flush=True)
