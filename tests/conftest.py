"""Shared fixtures: every behaviour is checked on every backend and start method.

Select one combination with ``-k``, e.g. ``pytest -k processes-spawn``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import manycore as mc
import toy_backend

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

# A backend defined in the tests (toy_backend.py), registered like a user's own:
# the pool fixture runs the shared suite on it too, with no change to manycore.
toy_backend.register()
TOY = [pytest.param(("toy", None), id="toy")]

# Dask, where installed: the `pool` and `shared_pool` fixtures run on a local
# Dask cluster too (one per session; these cases run after all others). Ray is
# covered by test_cluster.py alone: its runtime is slow to start and heavy.
CLUSTERS = [
    pytest.param(("dask", None), id="dask", marks=pytest.mark.cluster)
    for _ in [0]
    if importlib.util.find_spec("distributed") is not None
]
# MPI only where asked for (MANYCORE_TEST_MPI=1): tests/clusters/test_mpi.py runs
# the shared suite so, in a pytest of its own, since MPI, once started, stays in
# the process (the other tests fork it).
if os.environ.get("MANYCORE_TEST_MPI") == "1":
    CLUSTERS.append(pytest.param(("mpi", None), id="mpi", marks=pytest.mark.cluster))
# Celery where a broker with workers is given (tests/clusters/test_celery_service.py).
if os.environ.get("MANYCORE_TEST_CELERY"):
    CLUSTERS.append(pytest.param(("celery", None), id="celery", marks=pytest.mark.cluster))
# IPython parallel where asked for: MANYCORE_TEST_IPP names a running cluster's
# connection file (tests/clusters/test_ipyparallel_service.py starts one).
IPP = os.environ.get("MANYCORE_TEST_IPP")
if IPP:
    CLUSTERS.append(
        pytest.param(("ipyparallel", None), id="ipyparallel", marks=pytest.mark.cluster)
    )
# Spark likewise (MANYCORE_TEST_SPARK=1, tests/clusters/test_spark_service.py): one
# context per process, and seconds to start.
if os.environ.get("MANYCORE_TEST_SPARK") == "1":
    CLUSTERS.append(pytest.param(("spark", None), id="spark", marks=pytest.mark.cluster))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(backend name, start method) for one case."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=BACKENDS + TOY + CLUSTERS)
def pool(request: pytest.FixtureRequest) -> Iterator[mc.Pool]:
    with _pool_for(request) as p:
        yield p


@contextlib.contextmanager
def _pool_for(request: pytest.FixtureRequest) -> Iterator[mc.Pool]:
    name, method = request.param
    if name not in ("dask", "ray", "celery", "ipyparallel", "spark"):
        with mc.Pool(2, backend=name, start_method=method) as p:
            yield p
        return
    if "faults" in str(request.node.path):
        pytest.skip("the fault suite checks this machine's processes; clusters: test_cluster.py")
    options = cluster_options(request, name)
    with mc.Pool(**options) as p:
        yield p


def cluster_options(request: pytest.FixtureRequest, engine: str) -> dict[str, Any]:
    """Pool options reusing this session's cluster of ``engine``."""
    if engine == "dask":
        return {"backend": "dask", "client": request.getfixturevalue("dask_client")}
    if engine == "celery":
        return {"backend": "celery", "address": os.environ["MANYCORE_TEST_CELERY"]}
    if engine == "ipyparallel":
        return {"backend": "ipyparallel", "address": IPP}
    if engine == "spark":
        return {"backend": "spark", "client": request.getfixturevalue("spark_client")}
    request.getfixturevalue("ray_runtime")
    return {"backend": "ray"}


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def spark_client() -> Iterator[Any]:
    pytest.importorskip("pyspark", reason="pyspark is not installed")
    from clusters._spark_service import kill_leftovers, start_session

    session = start_session()
    yield session
    session.stop()
    kill_leftovers()


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="ray is not installed")
    # Ray's workers must find the test modules, and the manycore this run imported
    # (not one installed elsewhere).
    tests = Path(__file__).resolve().parent
    src = Path(mc.__file__).resolve().parents[1]
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(src), str(tests)])}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(params=PROCESS_BACKENDS)
def process_pool(request: pytest.FixtureRequest) -> Iterator[mc.Pool]:
    name, method = request.param
    with mc.Pool(2, backend=name, start_method=method) as p:
        yield p


@pytest.fixture(scope="module", params=BACKENDS + CLUSTERS)
def shared_pool(request: pytest.FixtureRequest) -> Iterator[mc.Pool]:
    """One pool per backend for a whole module (property tests run many examples)."""
    with _pool_for(request) as p:
        yield p


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Cluster tests last: Dask and Ray leave threads in this process, and the
    other tests fork it."""
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)
