"""The public surface is listed once, in manycore.__all__, and nothing is missing."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import manycore as mc

INIT = Path(mc.__file__)


def test_all_names_resolve() -> None:
    for name in mc.__all__:
        assert getattr(mc, name) is not None, name


def test_all_matches_the_lazy_table_and_the_type_checking_imports() -> None:
    assert set(mc._SOURCES) == set(mc.__all__) - {"__version__"}
    tree = ast.parse(INIT.read_text())
    typed: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                typed.update(alias.name for alias in imp.names)
                for alias in imp.names:
                    assert mc._SOURCES[alias.name] == (imp.module or ""), alias.name
    assert typed == set(mc._SOURCES)


def test_public_names_are_what_dir_shows() -> None:
    public = {n for n in dir(mc) if not n.startswith("_") and not inspect.ismodule(getattr(mc, n))}
    assert public == set(mc.__all__) - {"__version__"}


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        mc.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_worker_imports_stay_lean() -> None:
    # A spawned worker imports only what it runs: start-up time is worker time.
    code = (
        "import sys, manycore._engine._worker;"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('manycore'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().split(","))
    parent_side = {"manycore._api._calls", "manycore._api._pool", "manycore._engine._engine"}
    assert not loaded & (parent_side | {"manycore.backends"})


def test_backends_are_registered() -> None:
    built_in = [name for name in mc.backend_names() if name != "toy"]  # conftest's own
    assert built_in == ["asyncio", "dask", "processes", "ray", "serial", "threads"]


def test_keyword_only_options() -> None:
    for fn in (mc.map, mc.imap):
        params = inspect.signature(fn).parameters
        for name in ("workers", "backend", "chunksize", "ordered"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (fn, name)
