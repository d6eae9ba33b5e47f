"""The cluster suites: manycore against engines started as separate services
(``dask scheduler``/``dask worker`` processes, a Ray head, ``mpiexec``), as a
user runs them. ``make test-clusters`` runs this folder; ``make test`` leaves
it out. Each engine's service fixture starts what it needs on 127.0.0.1 and
stops every process it started. Where an engine is not installed the case
skips, except in CI (``CI=true``), where a missing engine is a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.services)


def need(what: str, found: bool, how: str) -> None:
    """Skip the case when ``what`` is missing, or fail it in CI, saying ``how``
    to install it."""
    if found:
        return
    message = f"{what} is not available ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs {message}", pytrace=False)
    pytest.skip(message)


def need_command(name: str, how: str) -> str:
    """The path of the command ``name``, or a skip (a failure in CI)."""
    path = shutil.which(name)
    need(f"the command {name!r}", path is not None, how)
    assert path is not None
    return path


@pytest.fixture(autouse=True, scope="session")
def _engines_import_the_tests() -> Iterator[None]:
    """An engine the tests start (a local ipcluster, Celery worker, a Spark session
    shared by a module) gets this process's environment: with the checkout's src/
    and tests/ on its PYTHONPATH it can import the test modules whose functions it
    runs, as a user's engines must import the user's modules. (pytest puts tests/
    on sys.path, not on PYTHONPATH.) Session-wide, so that it is set before any
    module's engine starts."""
    paths = [str(_HERE.parents[1] / "src"), str(_HERE.parent), os.environ.get("PYTHONPATH", "")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        yield
