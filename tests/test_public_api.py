"""The public surface is listed once, in manycore.__all__, and nothing is missing."""

from __future__ import annotations

import inspect

import manycore as mc


def test_all_is_complete_and_exists() -> None:
    public = {
        name
        for name, value in vars(mc).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(mc.__all__) - {"__version__"}
    for name in mc.__all__:
        assert hasattr(mc, name), name


def test_backends_are_registered() -> None:
    assert mc.backend_names() == ["processes", "serial", "threads"]


def test_keyword_only_options() -> None:
    for fn in (mc.map, mc.imap):
        params = inspect.signature(fn).parameters
        for name in ("workers", "backend", "chunksize", "ordered"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (fn, name)
