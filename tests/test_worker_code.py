"""Which code a worker runs, and what its tracebacks show: a script's function
names its real file and line (with every cloudpickle version), a method of an
importable class runs against the worker's module, a reloaded module's new code
is what runs."""

from __future__ import annotations

import importlib
import linecache
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import manycore as mc
import serfns
from conftest import PROCESS_BACKENDS

SOURCE = """\
def check(x):
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x
"""


def _script_function(source: str, filename: str, name: str) -> Any:
    """A function as a script (``__main__``) defines it: it travels by value."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def _failure_traceback(pool: mc.Pool, fn: Any) -> str:
    out = pool.map(fn, range(5), on_error="collect")
    assert isinstance(out[3], mc.Failure)
    return out[3].traceback


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_script_function_traceback_names_its_file_and_line(
    backend: tuple[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "script.py"
    path.write_text(SOURCE)
    check = _script_function(SOURCE, str(path), "check")
    with mc.Pool(2, backend=backend[0], start_method=backend[1]) as pool:
        text = _failure_traceback(pool, check)
    assert f'File "{path}", line 3, in check' in text
    assert 'raise ValueError(f"bad input {x}")' in text
    assert "<dynamic-code>" not in text


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_notebook_cell_traceback_shows_the_cells_source(backend: tuple[str, str]) -> None:
    # IPython keeps a cell's source in linecache under a name that is no file.
    cell = "<ipython-input-7-manycore-test>"
    linecache.cache[cell] = (len(SOURCE), None, SOURCE.splitlines(True), cell)
    try:
        check = _script_function(SOURCE, cell, "check")
        with mc.Pool(2, backend=backend[0], start_method=backend[1]) as pool:
            text = _failure_traceback(pool, check)
    finally:
        del linecache.cache[cell]
    assert f'File "{cell}", line 3, in check' in text
    assert 'raise ValueError(f"bad input {x}")' in text


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_methods_of_an_importable_class_see_the_workers_globals(
    backend: tuple[str, str],
) -> None:
    with mc.Pool(
        1, backend=backend[0], start_method=backend[1], init=serfns.set_value, init_args=["worker"]
    ) as pool:
        for fn in (serfns.K.get, serfns.K.static_get, serfns.K().method_get, serfns.K.Inner.get):
            assert pool.submit(fn).result(timeout=30) == "worker", fn
        with pytest.raises(ValueError, match="with worker") as info:
            pool.submit(serfns.K.fail).result(timeout=30)
    text = str(info.value.__cause__)
    assert f'File "{serfns.__file__}"' in text
    assert "raise ValueError" in text
    assert serfns.VALUE == "parent"


def _write_module(folder: Path, name: str, factor: int) -> None:
    # Only a module global changes: the function's own code stays the same. The
    # size changes too: a worker's reload within the same second must not take
    # bytecode cached for the old source (checked by mtime and size).
    padding = "#" * factor
    source = f"FACTOR = {factor}  {padding}\n\n\ndef scale(x):\n    return x * FACTOR\n"
    (folder / f"{name}.py").write_text(source)


@pytest.fixture
def reloadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"reloadable_{tmp_path.name.replace('-', '_')}"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    _write_module(tmp_path, name, 2)
    module = importlib.import_module(name)
    yield tmp_path, module
    sys.modules.pop(name, None)


def _reload(reloadable: Any, factor: int) -> Any:
    folder, module = reloadable
    _write_module(folder, module.__name__, factor)
    return importlib.reload(module)


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_warm_pool_runs_a_reloaded_modules_new_code(
    backend: tuple[str, str], reloadable: Any
) -> None:
    module = reloadable[1]
    with mc.Pool(2, backend=backend[0], start_method=backend[1]) as pool:
        assert pool.map(module.scale, range(4)) == [0, 2, 4, 6]
        module = _reload(reloadable, 3)
        assert pool.map(module.scale, range(4)) == [0, 3, 6, 9]
        assert pool.submit(module.scale, 5).result(timeout=30) == 15
        module = _reload(reloadable, 5)
        assert pool.map(module.scale, range(4)) == [0, 5, 10, 15]
        # A script's function that calls into the module by its name.
        uses = _script_function("def uses(x):\n    return mod.scale(x)\n", "<uses>", "uses")
        uses.__globals__["mod"] = module
        assert pool.map(uses, range(4)) == [0, 5, 10, 15]
        module = _reload(reloadable, 7)
        assert pool.map(uses, range(4)) == [0, 7, 14, 21]


def test_the_default_pool_runs_a_reloaded_modules_new_code(reloadable: Any) -> None:
    # A default pool an earlier test started has workers launched before the
    # module's folder was put on sys.path; this case is about reloads, not that.
    mc.shutdown_default_pools()
    module = reloadable[1]
    assert mc.map(module.scale, range(4)) == [0, 2, 4, 6]
    module = _reload(reloadable, 3)
    assert mc.map(module.scale, range(4)) == [0, 3, 6, 9]
    assert mc.map(module.scale, range(4), backend="threads") == [0, 3, 6, 9]


BIG_USER = """\
def f(x):
    return (BIG.tag, serfns.rebuilt(), x)
"""


def _big_user(big: Any) -> tuple[Any, dict[str, Any]]:
    namespace: dict[str, Any] = {"__name__": "__main__", "BIG": big, "serfns": serfns}
    exec(compile(BIG_USER, "<big-user>", "exec"), namespace)
    return namespace["f"], namespace


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_large_global_is_pickled_once_and_sent_once_per_worker(
    backend: tuple[str, str],
) -> None:
    f, _ = _big_user(serfns.Big("a"))
    serfns.Big.pickled = 0
    with mc.Pool(2, backend=backend[0], start_method=backend[1]) as pool:
        results = [pool.submit(f, i).result(timeout=30) for i in range(10)]
        results += [fu.result(timeout=30) for fu in [pool.submit(f, i) for i in range(10)]]
        results += pool.map(f, range(20), chunksize=1) + pool.map(f, range(5))
    # Each worker rebuilt it once, whatever it ran; this process pickled it once.
    assert {r[:2] for r in results} == {("a", 1)}
    assert serfns.Big.pickled == 1


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_rebinding_a_large_global_sends_the_new_value(backend: tuple[str, str]) -> None:
    f, namespace = _big_user(serfns.Big("a"))
    with mc.Pool(1, backend=backend[0], start_method=backend[1]) as pool:
        assert pool.submit(f, 0).result(timeout=30) == ("a", 1, 0)
        namespace["BIG"] = serfns.Big("b")
        assert pool.submit(f, 1).result(timeout=30) == ("b", 2, 1)
        assert pool.map(f, range(3)) == [("b", 2, 0), ("b", 2, 1), ("b", 2, 2)]


def test_a_large_array_global_is_rebound_and_writable_in_the_worker() -> None:
    np = pytest.importorskip("numpy")
    source = "def f(i):\n    DATA[i] += 1\n    return int(DATA.sum())\n"
    namespace: dict[str, Any] = {"__name__": "__main__", "DATA": np.zeros(1 << 18)}
    exec(compile(source, "<array-user>", "exec"), namespace)
    with mc.Pool(1) as pool:
        assert pool.map(namespace["f"], range(3)) == [1, 2, 3]  # the worker keeps its copy
        namespace["DATA"] = np.ones(1 << 18)
        assert pool.submit(namespace["f"], 0).result(timeout=30) == (1 << 18) + 1
    assert namespace["DATA"].sum() == 1 << 18  # the parent's is not touched


@pytest.mark.parametrize("value", [serfns.Unpicklable(), __import__("threading").Lock()])
def test_an_unpicklable_global_is_named(value: Any) -> None:
    source = "def uses_it(x):\n    return (HELD, x)\n"
    namespace: dict[str, Any] = {"__name__": "__main__", "HELD": value}
    exec(compile(source, "<uses-it>", "exec"), namespace)
    with mc.Pool(1) as pool, pytest.raises(mc.SerializationError, match="global 'HELD'"):
        pool.submit(namespace["uses_it"], 1).result(timeout=30)


def test_a_large_bytearray_global_can_still_grow_in_the_parent() -> None:
    source = "def size(x):\n    return len(BUF) + x\n"
    namespace: dict[str, Any] = {"__name__": "__main__", "BUF": bytearray(2 << 20)}
    exec(compile(source, "<grows>", "exec"), namespace)
    with mc.Pool(1) as pool:
        assert pool.submit(namespace["size"], 1).result(timeout=30) == (2 << 20) + 1
        namespace["BUF"].extend(b"more")  # no view of it is kept


@pytest.fixture
def ghost_module() -> Any:
    """A module this process has but no new worker can import (made in memory)."""
    module = types.ModuleType("manycore_ghost_module")
    exec("def double(x):\n    return 2 * x\n", module.__dict__)
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


@pytest.mark.parametrize("backend", [p for p in PROCESS_BACKENDS if p.values[0][1] != "fork"])
def test_a_function_the_worker_cannot_import_fails_its_tasks_not_the_worker(
    backend: tuple[str, str], ghost_module: Any
) -> None:
    with mc.Pool(1, backend=backend[0], start_method=backend[1]) as pool:
        with pytest.raises(mc.SerializationError, match=r"manycore_ghost_module\.double") as info:
            pool.map(ghost_module.double, range(4))
        assert "No module named 'manycore_ghost_module'" in str(info.value)
        out = pool.map(ghost_module.double, range(3), on_error="collect", chunksize=1)
        assert all(isinstance(r, mc.Failure) for r in out)
        with pytest.raises(mc.SerializationError, match="could not be unpickled"):
            pool.submit(ghost_module.double, 1).result(timeout=30)
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool.stats().restarts == 0  # no worker died of it


def _script(source: str, **globals_: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__", **globals_}
    exec(compile(source, "<adversary>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_large_global_rebound_while_a_call_is_in_flight(backend: tuple[str, str]) -> None:
    # Each call sees the value bound when it was submitted, even queued behind another.
    ns = _script(
        "import time\ndef f(s):\n    time.sleep(s)\n    return BIG.tag\n", BIG=serfns.Big("a")
    )
    with mc.Pool(1, backend=backend[0], start_method=backend[1]) as pool:
        first = [pool.submit(ns["f"], s) for s in (0.3, 0, 0)]
        ns["BIG"] = serfns.Big("b")
        second = [pool.submit(ns["f"], 0) for _ in range(3)]
        assert [f.result(timeout=30) for f in first] == ["a", "a", "a"]
        assert [f.result(timeout=30) for f in second] == ["b", "b", "b"]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_large_global_read_by_helpers_lambdas_and_two_functions_goes_once(
    backend: tuple[str, str],
) -> None:
    source = (
        "def helper():\n    return BIG.tag\n"
        "def via_helper(x):\n    return helper()\n"
        "by_lambda = lambda x: BIG.tag\n"
        "def nested(x):\n    def inner():\n        return BIG.tag\n    return inner()\n"
    )
    ns = _script(source, BIG=serfns.Big("n"))
    serfns.Big.pickled = 0
    with mc.Pool(1, backend=backend[0], start_method=backend[1]) as pool:
        for _ in range(3):
            for name in ("via_helper", "by_lambda", "nested"):
                assert pool.map(ns[name], range(2)) == ["n", "n"]
                assert pool.submit(ns[name], 0).result(timeout=30) == "n"
    assert serfns.Big.pickled == 1


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
@pytest.mark.parametrize("how", ["crash", "max_tasks_per_worker"])
def test_a_replacement_worker_gets_the_large_global(backend: tuple[str, str], how: str) -> None:
    source = (
        "import os\ndef f(x):\n    if x == DIE:\n        os._exit(3)\n    return (BIG.tag, x)\n"
    )
    ns = _script(source, BIG=serfns.Big("r"), DIE=1 if how == "crash" else -1)
    options = {"max_tasks_per_worker": 1} if how != "crash" else {}
    with mc.Pool(1, backend=backend[0], start_method=backend[1], **options) as pool:
        out = pool.map(ns["f"], range(4), on_error="collect", chunksize=1)
        assert [o for i, o in enumerate(out) if i != 1 or how != "crash"] == [
            ("r", i) for i in range(4) if i != 1 or how != "crash"
        ]
        assert pool.submit(ns["f"], 5).result(timeout=30) == ("r", 5)
        assert pool.stats().restarts >= 1


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_large_global_beside_a_mutable_small_one_is_sent_once(backend: tuple[str, str]) -> None:
    # The function's pickle cannot be cached (CONFIG may change inside), yet the
    # large global it names is the same shipment call after call.
    source = "def f(x):\n    return (BIG.tag, serfns.rebuilt(), CONFIG['k'], x)\n"
    ns = _script(source, BIG=serfns.Big("m"), CONFIG={"k": 1}, serfns=serfns)
    serfns.Big.pickled = 0
    with mc.Pool(1, backend=backend[0], start_method=backend[1]) as pool:
        assert [pool.submit(ns["f"], i).result(timeout=30)[:3] for i in range(4)] == [
            ("m", 1, 1)
        ] * 4
        ns["CONFIG"]["k"] = 2  # a change inside the small global is still seen
        assert pool.map(ns["f"], range(2)) == [("m", 1, 2, 0), ("m", 1, 2, 1)]
    assert serfns.Big.pickled == 1


@pytest.mark.parametrize("backend", [p for p in PROCESS_BACKENDS if p.values[0][1] != "fork"])
def test_a_large_global_the_worker_cannot_unpickle_fails_the_calls(
    backend: tuple[str, str], ghost_module: Any
) -> None:
    exec("class Table:\n    nbytes = 8 << 20\n", ghost_module.__dict__)
    ns = _script("def f(x):\n    return (type(TABLE).__name__, x)\n", TABLE=ghost_module.Table())
    with mc.Pool(1, backend=backend[0], start_method=backend[1]) as pool:
        with pytest.raises(mc.SerializationError, match="could not be unpickled") as info:
            pool.submit(ns["f"], 1).result(timeout=30)
        assert "TABLE" in str(info.value)
        assert "No module named 'manycore_ghost_module'" in str(info.value)
        assert pool.map(abs, [-3]) == [3]
        assert pool.stats().restarts == 0


def test_a_large_array_changed_in_place_is_not_seen_by_a_worker_that_has_it() -> None:
    np = pytest.importorskip("numpy")
    ns = _script("def first(x):\n    return float(DATA[0]) + x\n", DATA=np.zeros(1 << 18))
    with mc.Pool(1) as pool:
        assert pool.submit(ns["first"], 0).result(timeout=30) == 0.0
        ns["DATA"][0] = 5.0  # in place: this worker keeps its copy (docs/errors.md)
        assert pool.submit(ns["first"], 0).result(timeout=30) == 0.0
        ns["DATA"] = ns["DATA"].copy()  # rebound: sent again
        assert pool.submit(ns["first"], 0).result(timeout=30) == 5.0
