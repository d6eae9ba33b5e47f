"""Which code a worker runs, and what its tracebacks show: a script's function
names its real file and line (with every cloudpickle version), a method of an
importable class runs against the worker's module, a reloaded module's new code
is what runs."""

from __future__ import annotations

import linecache
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
