"""backend="auto" and mc.profile on a machine whose CPUs other programs keep busy.

Time a call spends ready to run, queued behind other programs for a CPU, is not
the function waiting (sleep, I/O): counted as waiting, pure-Python work went to
threads on a loaded machine, and even ``x + 1`` did whenever one call was
preempted during the sample. Each test here runs while busy-loop processes (4
per usable CPU, each ending on its own after ``_HOG_SECONDS``) load every CPU.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator

import pytest

import manycore as mc
import proffns
from manycore._api._auto import _Sampler
from manycore._core._cpus import usable_cpus
from manycore._observe import _runqueue
from manycore._observe._runqueue import queued
from manycore._scheduler._maprun import InputSource

_HOG_SECONDS = 40  # a hog outlives no test by much, even if its killer never runs
_HOG = (
    "import time\n"
    f"end = time.monotonic() + {_HOG_SECONDS}\n"
    "print('spinning', flush=True)\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


@pytest.fixture
def cpu_hogs() -> Iterator[int]:
    """Four busy-loop processes per usable CPU, spinning before the test starts."""
    if queued() is None:
        pytest.skip("the kernel does not report run-queue wait (/proc/self/task/<tid>/schedstat)")
    cpus = usable_cpus()
    if cpus > 16:
        pytest.skip(f"{cpus} CPUs: too many to load with busy loops in a test")
    hogs = [
        subprocess.Popen([sys.executable, "-c", _HOG], stdout=subprocess.PIPE)
        for _ in range(4 * cpus)
    ]
    try:
        for hog in hogs:
            assert hog.stdout is not None
            assert hog.stdout.readline() == b"spinning\n"
        yield len(hogs)
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(timeout=10)
            if hog.stdout is not None:
                hog.stdout.close()


def picked(err: str) -> str:
    line = next(x for x in err.splitlines() if 'backend="auto" picked' in x)
    return line.split("picked ")[1].split()[0]


def test_the_sample_tells_a_busy_cpu_from_waiting(cpu_hogs: int) -> None:
    sampler = _Sampler(proffns.spin, InputSource((range(8),), False))
    for x in range(8):
        sampler(x)
    off_cpu = sampler.wall - sampler.cpu
    assert off_cpu > sampler.cpu, "the hogs did not load the CPUs"  # > half the wall time
    # Nearly all the time off a CPU was queued for one (spin never sleeps).
    assert sampler.queued > 0.8 * off_cpu, (sampler.wall, sampler.cpu, sampler.queued)


def test_auto_does_not_send_computing_to_threads_on_a_busy_machine(
    cpu_hogs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = mc.map(proffns.spin, range(40), backend="auto", explain=True)
    assert out == list(range(40))
    err = capsys.readouterr().err
    assert picked(err) != "threads", err
    assert "of their time waiting" not in err


@pytest.mark.slow  # 16 in 16 with 12 hogs on 2 CPUs (2 in 14 failed before each thread's own wait)
def test_auto_sends_gil_free_work_to_threads_on_a_busy_machine(
    cpu_hogs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # The probe's threads queue behind the hogs: that wait is not the GIL.
    pytest.importorskip("numpy")
    out = mc.map(proffns.sort_floats, range(24), backend="auto", explain=True)
    assert out == list(range(24))
    err = capsys.readouterr().err
    assert picked(err) == "threads" and "releases the GIL" in err, err


def test_auto_runs_cheap_work_inline_on_a_busy_machine(
    cpu_hogs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # What test_profile's test_auto_reads_a_generator_once_and_lazily checks, many
    # times: one preemption during a sample of x + 1 used to read as 100% waiting.
    for _ in range(20):
        seen: list[int] = []

        def numbers(seen: list[int] = seen) -> Iterator[int]:
            for i in itertools.count():
                seen.append(i)
                yield i

        endless = mc.imap(proffns.add1, numbers(), backend="auto", explain=True)
        assert not seen
        assert list(itertools.islice(endless, 100)) == list(range(1, 101))
        assert len(seen) < 1000
        err = capsys.readouterr().err
        assert picked(err) == "serial", err


def test_where_the_kernel_does_not_say_nothing_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_runqueue, "_available", True)
    monkeypatch.setattr(_runqueue, "_PATH", "/nonexistent/{tid}/schedstat")
    assert _runqueue.queued() is None
    assert _runqueue.queued_between(None, 1.0, 1.0) == 0.0
    sampler = _Sampler(proffns.add1, InputSource((range(4),), False))
    assert [sampler(x) for x in range(4)] == [1, 2, 3, 4]
    assert sampler.calls == 4 and sampler.queued == 0.0
    assert mc.map(proffns.add1, range(100), backend="auto") == list(range(1, 101))


def test_profile_reads_computing_as_computing_on_a_busy_machine(cpu_hogs: int) -> None:
    report = mc.profile(proffns.spin, range(20), backends=("serial",), sample=20)
    assert report.waiting < 0.2, str(report)
    assert report.seconds_per_item < 0.02  # 5 ms of CPU a call, its wait for a CPU left out
