"""GIL-free work on threads: backend="auto" measures whether a function releases
the GIL (two items at once on two threads) and picks threads for one that does.

The rule (manycore._observe._gil) is tested on timings recorded on the shared
2-core machine; the end-to-end run asserts only what was picked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import manycore as mc
import proffns
from manycore._observe import BackendNames
from manycore._observe._gil import ProbeCall, probe_items, threads_busy, worth_probing
from manycore._observe._recommend import Measurements, Run, decide
from manycore.backends import backend_for

NAMES = BackendNames.of(backend_for)


def _pair(cpu: float, wall: float, queued: float = 0.0, began: float = 0.0) -> list[ProbeCall]:
    """Two calls of ``cpu`` seconds, started together, each ending after ``wall``."""
    return [ProbeCall(began, began + wall, cpu, queued, thread=t) for t in (1, 2)]


def test_holding_the_gil_keeps_one_cpu_busy() -> None:
    # Recorded: pure Python, 4 ms each on two threads, ended 8.6 ms after hand-over.
    calls = [ProbeCall(0.0004, 0.0044, 0.0041, 0.0, 1), ProbeCall(0.0044, 0.0086, 0.0040, 0.0, 2)]
    busy = threads_busy(calls, 0.0)
    assert busy is not None and 0.9 < busy < 1.0


def test_releasing_the_gil_keeps_two_busy_even_on_a_loaded_machine() -> None:
    # Recorded: np.sort, 54 ms of CPU each in 250 ms, 195 ms of it queued behind
    # other programs (load average 4 on 2 CPUs): the queue is not the GIL.
    busy = threads_busy(_pair(0.0545, 0.250, queued=0.195), -0.001)
    assert busy is not None and busy > 1.8


def test_each_threads_own_wait_for_a_cpu_is_taken_from_its_own_time() -> None:
    # Eight hogs on 2 CPUs: thread 2 queued 150 ms before its first call, and
    # longer inside it, than thread 1. Both ran 28 ms of GIL-free CPU in 30 ms
    # of their own time; an average of the waits read 0.3 CPUs (the GIL held).
    free = [
        ProbeCall(0.002, 0.100, 0.028, 0.070, 1),
        ProbeCall(0.152, 0.300, 0.028, 0.120, 2, queued_before=0.150),
    ]
    busy = threads_busy(free, 0.0)
    assert busy is not None and busy > 1.8
    # Holding the GIL: thread 2 waits for it (not for a CPU) until thread 1 is
    # done, and that wait stays in its time.
    held = [ProbeCall(0.0, 0.100, 0.028, 0.070, 1), ProbeCall(0.100, 0.200, 0.028, 0.070, 2)]
    busy = threads_busy(held, 0.0)
    assert busy is not None and busy < 1.0


def test_one_thread_or_one_call_tells_nothing() -> None:
    assert threads_busy(_pair(0.01, 0.01)[:1], 0.0) is None
    same = [ProbeCall(0.0, 0.01, 0.01, 0.0, 1), ProbeCall(0.01, 0.02, 0.01, 0.0, 1)]
    assert threads_busy(same, 0.0) is None
    assert threads_busy(_pair(0.01, 0.0), 0.0) is None
    # No CPU and every moment queued: nothing left to divide by.
    assert threads_busy(_pair(0.0, 1.0, queued=1.0), 0.0) is None


def test_a_probe_whose_other_thread_never_came_tells_nothing(monkeypatch: Any) -> None:
    # The lone thread's wait for the other is in its time and is not the GIL.
    from manycore._api import _auto

    monkeypatch.setattr(_auto, "_PROBE_WAIT", 0.01)
    probe = _auto._Probe(abs)
    assert probe(-3) == 3 and probe(-4) == 4
    assert probe.broken


def test_many_calls_per_thread_count_each_threads_queue_once() -> None:
    calls = [ProbeCall(i * 0.01, (i + 1) * 0.01, 0.005, 0.005, t) for t in (1, 2) for i in range(4)]
    assert threads_busy(calls, 0.0) == pytest.approx(2.0)


def test_what_is_worth_probing_and_with_how_many_items() -> None:
    assert worth_probing(0.005, 1.0, threads=6, cpus=2)
    assert not worth_probing(0.0005, 1.0, threads=6, cpus=2)  # too short to time
    assert not worth_probing(0.005, 0.2, threads=6, cpus=2)  # it mostly waits
    assert not worth_probing(0.005, 1.0, threads=6, cpus=1)  # nothing runs side by side
    assert probe_items(0.1) == 4  # at least four: one reading a thread swings when loaded
    assert probe_items(0.005) == 12
    assert probe_items(1e-6) == probe_items(0.0) == 32


def _computing(**kw: object) -> Measurements:
    base: dict[str, object] = {
        "predict": True,
        "thread_workers": 6,
        "process_workers": 2,
        "names": NAMES,
    }
    base.update(kw)
    return Measurements(10, 0.05, 0.05, **base)  # type: ignore[arg-type]


def test_auto_rule_threads_for_a_function_that_releases_the_gil() -> None:
    rec = decide(_computing(threads_busy=1.9))
    assert rec.backend == "threads", rec.reason
    assert "releases the GIL" in rec.reason and "1.9 CPUs" in rec.reason
    # Its data need not pickle: threads pass it by reference.
    assert decide(_computing(threads_busy=1.9, bytes_per_task=None)).backend == "threads"


def test_auto_rule_processes_for_one_that_holds_it() -> None:
    rec = decide(_computing(threads_busy=1.0))
    assert rec.backend == "processes", rec.reason
    assert "holds the GIL" in rec.reason
    assert decide(_computing()).backend == "processes"  # not probed: as before
    assert "GIL" not in decide(_computing()).reason


def test_profile_tells_a_loaded_machine_from_a_held_gil() -> None:
    # Recorded by mc.profile at load average 7 on 2 CPUs: np.sort on 2 threads used
    # 0.235 s of CPU in 0.278 s, its threads 0.321 s on a run queue (summed).
    loaded = Run("threads", 2, 0.278, cpu=0.235, queued=0.321)
    assert loaded.busy() == pytest.approx(2.0, abs=0.05)
    assert Run("threads", 2, 0.278, cpu=0.235).busy() == pytest.approx(0.85, abs=0.01)
    # Holding the GIL, the waiting thread is blocked, not queued: at most the
    # runner's own off-CPU time is queued, and it stays below 1 CPU.
    held = Run("threads", 2, 0.50, cpu=0.25, queued=0.25)
    busy = held.busy()
    assert busy is not None and busy < 1.4
    m = Measurements(40, 0.6, 0.6, (loaded,), names=NAMES)
    assert m.holds_gil() is False
    assert Measurements(40, 0.6, 0.6, (held,), names=NAMES).holds_gil() is True
    assert Run("processes", 2, 0.3).busy() is None


def _picked(err: str) -> str:
    found = re.search(r'manycore: backend="auto" picked (\w+)', err)
    assert found, err
    return found.group(1)


@pytest.mark.slow  # at load average 13 on 2 CPUs it picked threads 3 times in 4
def test_auto_picks_threads_for_numpy_that_releases_the_gil(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("numpy")
    assert mc.map(proffns.sort_floats, range(24), backend="auto", explain=True) == list(range(24))
    err = capsys.readouterr().err
    assert _picked(err) == "threads" and "releases the GIL" in err, err


def test_auto_still_sends_pure_python_to_processes(capsys: pytest.CaptureFixture[str]) -> None:
    mc.map(proffns.add1, range(4))  # the default process pool is up: no start-up to pay
    capsys.readouterr()
    assert mc.map(proffns.spin, range(120), backend="auto", explain=True) == list(range(120))
    err = capsys.readouterr().err
    assert _picked(err) == "processes" and "holds the GIL" in err, err


# ------------------------------------------------------ the demo's kernel


def test_numpy_kernel_matches_the_python_reference() -> None:
    pytest.importorskip("numpy")
    from manycore._cli._kernel import band, mandel_band_numpy
    from manycore._cli._mandel import mandel_band

    for number in (0, 3, 4, 7):
        expected = mandel_band(number, 8, 64, 50)
        assert mandel_band_numpy(number, 8, 64, 50) == expected
        assert band(number, 8, 64, 50, kind="numpy") == expected


def test_pythran_kernel_compiles_and_matches(tmp_path: Path, monkeypatch: Any) -> None:
    pytest.importorskip("pythran")
    from manycore._cli._kernel import load
    from manycore._cli._mandel import mandel_band

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a fresh compile, in tmp
    said: list[str] = []
    kernel = load(say=said.append)
    assert kernel is not None and kernel.name == "pythran", said
    assert kernel.fn(3, 8, 64, 50) == mandel_band(3, 8, 64, 50)
    assert list(tmp_path.rglob("*.so")), "compiled into the cache folder"
