"""Workers limit BLAS/OpenMP threads so that workers x threads fits the CPUs."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
threadpoolctl = pytest.importorskip("threadpoolctl")

import manycore as mc  # noqa: E402
from conftest import PROCESS_BACKENDS  # noqa: E402
from faulty import blas_threads  # noqa: E402


def _parent_blas() -> list[int]:
    return blas_threads()


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
@pytest.mark.parametrize("limit", [1, 2])
def test_blas_threads_in_workers(backend: tuple[str, str], limit: int) -> None:
    if not _parent_blas():
        pytest.skip("NumPy here has no BLAS that threadpoolctl can see")
    import numpy  # noqa: F401  - loaded in the parent: a forked worker inherits it

    with mc.Pool(2, start_method=backend[1], blas_threads=limit) as pool:
        assert set(pool.submit(blas_threads).result(timeout=60)) == {limit}


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_default_blas_threads_share_the_cpus(backend: tuple[str, str]) -> None:
    if not _parent_blas():
        pytest.skip("NumPy here has no BLAS that threadpoolctl can see")
    workers = 2
    expected = max(1, mc.usable_cpus() // workers)
    with mc.Pool(workers, start_method=backend[1]) as pool:
        assert set(pool.submit(blas_threads).result(timeout=60)) == {expected}


def test_blas_threads_is_checked() -> None:
    with pytest.raises(ValueError, match="blas_threads must be at least 1"):
        mc.Pool(1, blas_threads=0)
