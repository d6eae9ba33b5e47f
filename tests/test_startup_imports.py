"""What a worker process imports as it starts: the worker's entry point, and the
fork server's module, must stay light (a ``spawn`` pool pays a worker's imports
once per worker, the fork server once).

Each module listed here was once imported by the worker at start-up and costs
milliseconds; an eager import that brings one back fails this test. Import it
where it is used, on the path that needs it, with a comment saying why."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

# Modules a worker does not need to boot and serve a plain task (module: why heavy).
HEAVY = {
    "concurrent.futures": "loads logging; only the parent makes futures",
    "concurrent.futures.process": "WorkerCrashed's base: multiprocessing, tempfile, subprocess",
    "multiprocessing": "socket, selectors; its key is set only when a task loads it",
    "logging": "via concurrent.futures",
    "dataclasses": "inspect, ast, dis",
    "inspect": "ast, dis, tokenize",
    "pathlib": "urllib.parse, ipaddress",
    "secrets": "hmac, hashlib (shared-memory names use os.urandom)",
    "hashlib": "via secrets",
    "tempfile": "shutil, random",
    "subprocess": "only the parent launches workers",
    "cloudpickle": "loaded when a payload needs it (pickle finds its reducers itself)",
    "platform": "via cloudpickle",
    "traceback": "only formatting an error needs it",
    "typing": "manycore's modules read TYPE_CHECKING without it",
    "manycore._core._broken": "the broken-pool errors: only the parent raises them",
    "manycore._transport._serialize": "the parent's pickler (a cloudpickle subclass)",
}

_PROBE = """
import json, sys
{code}
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    # (json is the probe's own: it is checked nowhere here.)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "entry",
    ["from manycore._engine._worker import main", "import manycore._engine._forkserver"],
)
def test_worker_entry_points_import_no_heavy_module(entry: str) -> None:
    loaded = _modules_after(entry)
    assert "manycore._engine._worker" in loaded or "manycore._engine._forkserver" in loaded
    heavy = sorted(set(HEAVY) & loaded)
    assert not heavy, "imported at worker start-up: " + "; ".join(
        f"{name} ({HEAVY[name]})" for name in heavy
    )


def test_forkserver_module_does_not_load_the_engine() -> None:
    # It is imported early, to start the server in the background: the parent's
    # side of the engine (and the backends, the scheduler) load later, if used.
    loaded = _modules_after("import manycore._engine._forkserver")
    assert not {"manycore._engine._engine", "manycore._engine._workerproc"} & loaded
    assert not {m for m in loaded if m.startswith(("manycore.backends", "manycore._scheduler"))}


def test_a_worker_serving_a_task_loads_no_heavy_module_but_gets_the_key() -> None:
    # A booted spawn worker, with a task done (a builtin on a string: nothing to
    # unpickle by value), still has none of them. multiprocessing's key is set as
    # multiprocessing loads, for a Manager proxy to connect with it.
    import multiprocessing

    import manycore as mc

    key = bytes(multiprocessing.current_process().authkey)
    with mc.Pool(1, start_method="spawn") as pool:
        loaded = pool.submit(eval, "sorted(__import__('sys').modules)").result(timeout=60)
        assert not set(HEAVY) & set(loaded)
        code = "bytes(__import__('multiprocessing').current_process().authkey)"
        assert pool.submit(eval, code).result(timeout=60) == key


def test_a_parent_running_a_process_pool_does_not_load_the_broken_pool_errors() -> None:
    # WorkerCrashed's base, BrokenProcessPool, loads concurrent.futures.process
    # (multiprocessing.connection, tempfile: ~4 ms): loaded once a crash or a
    # broken pool is raised, not for a pool that runs fine.
    loaded = _modules_after(
        "import manycore as mc\n"
        "for method in mc.START_METHODS:\n"
        "    with mc.Pool(2, start_method=method) as pool:\n"
        "        assert pool.submit(abs, -7).result(timeout=60) == 7\n"
        "        assert pool.map(abs, range(-9, 9), timeout=60) == [abs(x) for x in range(-9, 9)]"
    )
    assert not {"concurrent.futures.process", "manycore._core._broken"} & loaded


def test_a_fork_server_worker_has_cloudpickle_before_its_first_task() -> None:
    # Loaded once in the server (a script's functions arrive by value and need
    # it), not in each worker's first task: ~16 ms a pool.
    import manycore as mc

    if "forkserver" not in mc.START_METHODS:
        pytest.skip("no fork server here")
    with mc.Pool(1, start_method="forkserver") as pool:
        assert pool.submit(eval, "'cloudpickle' in __import__('sys').modules").result(timeout=60)
