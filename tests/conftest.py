"""Shared fixtures: every behaviour is checked on every backend and start method.

Select one combination with ``-k``, e.g. ``pytest -k processes-spawn``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import manycore as mc

BACKENDS = [
    pytest.param(("serial", None), id="serial"),
    pytest.param(("threads", None), id="threads"),
    pytest.param(("processes", "spawn"), id="processes-spawn"),
]
if "fork" in mc.START_METHODS:
    BACKENDS.append(pytest.param(("processes", "fork"), id="processes-fork"))
if "forkserver" in mc.START_METHODS:
    BACKENDS.append(pytest.param(("processes", "forkserver"), id="processes-forkserver"))

PROCESS_BACKENDS = [p for p in BACKENDS if p.values[0][0] == "processes"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(backend name, start method) for one case."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def pool(backend: tuple[str, str | None]) -> Iterator[mc.Pool]:
    name, method = backend
    with mc.Pool(2, backend=name, start_method=method) as p:
        yield p


@pytest.fixture(params=PROCESS_BACKENDS)
def process_pool(request: pytest.FixtureRequest) -> Iterator[mc.Pool]:
    name, method = request.param
    with mc.Pool(2, backend=name, start_method=method) as p:
        yield p


@pytest.fixture(scope="module", params=BACKENDS)
def shared_pool(request: pytest.FixtureRequest) -> Iterator[mc.Pool]:
    """One pool per backend for a whole module (property tests run many examples)."""
    name, method = request.param
    with mc.Pool(2, backend=name, start_method=method) as p:
        yield p


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Cluster tests last: Dask and Ray leave threads in this process, and the
    other tests fork it."""
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)
