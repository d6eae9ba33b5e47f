"""The public surface is listed once, in manycore.__all__, and nothing is missing."""

from __future__ import annotations

import ast
import enum
import inspect
import pickle
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import helpers
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
    assert built_in == [
        "asyncio",
        "celery",
        "dask",
        "ipyparallel",
        "mpi",
        "processes",
        "ray",
        "serial",
        "spark",
        "threads",
    ]


def test_keyword_only_options() -> None:
    for fn in (mc.map, mc.imap):
        params = inspect.signature(fn).parameters
        for name in ("workers", "backend", "chunksize", "ordered"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (fn, name)


def _public_objects() -> dict[str, Any]:
    """The classes and functions of ``__all__`` (not its constants)."""
    found = {name: getattr(mc, name) for name in mc.__all__}
    return {n: v for n, v in found.items() if isinstance(v, type) or inspect.isfunction(v)}


def test_public_names_are_named_as_public() -> None:
    objects = _public_objects()
    assert len(objects) == len(mc.__all__) - 2  # all but START_METHODS and __version__
    for name, obj in objects.items():
        assert (obj.__module__, obj.__qualname__) == ("manycore", name)
        assert pickle.loads(pickle.dumps(obj)) is obj, name  # by reference, through __getattr__
        if isinstance(obj, type) and not issubclass(obj, enum.Enum):
            assert repr(obj) == f"<class 'manycore.{name}'>"


def _errors() -> list[BaseException]:
    return [
        mc.ManycoreError("m"),
        mc.PoolClosed("m"),
        mc.PoolBroken("m"),
        mc.WorkerCrashed("m", exitcode=-9, index=1),
        mc.TaskTimeout("m", timeout=1.5, index=2),
        mc.UpstreamFailed("m", task="t", key=3),
        mc.SerializationError("m"),
        mc.RemoteError("userlib.Oops", "m"),
        mc.CheckpointMismatch("m", path="p"),
        mc.RemoteTraceback("tb"),
    ]


def _same(a: BaseException, b: BaseException) -> bool:
    keep = ("args", "exitcode", "index", "timeout", "task", "key", "type_name", "path")
    return type(a) is type(b) and all(getattr(a, k, 0) == getattr(b, k, 0) for k in keep)


def test_errors_round_trip_through_pickle_and_name_the_public_path() -> None:
    for exc in _errors():
        blob = pickle.dumps(exc)
        assert _same(pickle.loads(blob), exc), exc
        if type(exc).__reduce__ is BaseException.__reduce__:
            assert b"manycore._" not in blob  # the class goes by its public name
        line = traceback.format_exception_only(type(exc), exc)[-1]
        assert line.startswith(f"manycore.{type(exc).__name__}"), line


def test_errors_cross_a_process_both_ways() -> None:
    errors = _errors()
    with mc.Pool(workers=1, backend="processes") as pool:
        assert all(map(_same, pool.map(helpers.identity, errors), errors))
        out: list[Any] = pool.map(helpers.raise_it, errors, on_error="collect")
    for failure, exc in zip(out, errors, strict=True):
        assert isinstance(failure, mc.Failure) and _same(failure.exception, exc), failure
