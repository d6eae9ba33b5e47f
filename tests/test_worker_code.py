"""Which code a worker runs, and what its tracebacks show: a script's function
names its real file and line (with every cloudpickle version), a method of an
importable class runs against the worker's module, a reloaded module's new code
is what runs."""

from __future__ import annotations

import importlib
import linecache
import sys
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
    # Another size each time: a reload within the same second must not take the
    # bytecode cached for the old source (checked by mtime and size).
    padding = "#" * factor
    (folder / f"{name}.py").write_text(f"def scale(x):\n    return x * {factor}  {padding}\n")


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
    if backend[1] == "forkserver":
        pytest.skip("the fork server keeps the sys.path it started with: no folder added later")
    module = reloadable[1]
    with mc.Pool(2, backend=backend[0], start_method=backend[1]) as pool:
        assert pool.map(module.scale, range(4)) == [0, 2, 4, 6]
        module = _reload(reloadable, 3)
        assert pool.map(module.scale, range(4)) == [0, 3, 6, 9]
        assert pool.submit(module.scale, 5).result(timeout=30) == 15
        module = _reload(reloadable, 5)
        assert pool.map(module.scale, range(4)) == [0, 5, 10, 15]


def test_the_default_pool_runs_a_reloaded_modules_new_code(reloadable: Any) -> None:
    module = reloadable[1]
    assert mc.map(module.scale, range(4)) == [0, 2, 4, 6]
    module = _reload(reloadable, 3)
    assert mc.map(module.scale, range(4)) == [0, 3, 6, 9]
    assert mc.map(module.scale, range(4), backend="threads") == [0, 3, 6, 9]
