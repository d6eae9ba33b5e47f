"""``gpus=`` on a Dask cluster started as a user starts one on GPU machines: one
worker advertises a GPU (``dask worker --resources GPU=1``, pinned to its device
by ``CUDA_VISIBLE_DEVICES``), the other none. No GPU is needed: the devices are
only named, and each task reports what it sees."""

from __future__ import annotations

import pytest

import clusterfns as cf
import manycore as mc

from ._dask_service import FAKE_DEVICES, DaskService, gpu_dask_service

__all__ = ["gpu_dask_service"]  # the fixture, used by name

GPU_WORKER = ("w0", FAKE_DEVICES[0])  # (its name, the device it sees)


@pytest.mark.timeout(120)
def test_gpu_tasks_run_on_the_gpu_worker_and_see_its_device(
    gpu_dask_service: DaskService,
) -> None:
    address = gpu_dask_service.address
    with mc.Pool(backend="dask", address=address, gpus=1) as pool:
        # The other worker is free all along, yet no task goes there.
        assert set(pool.map(cf.device_seen, [0.05] * 12)) == {GPU_WORKER}
        assert pool.submit(cf.device_seen, 0).result(timeout=60) == GPU_WORKER
    try:
        seen = mc.map(cf.device_seen, [0.05] * 6, backend="dask", address=address, gpus=1)
        assert set(seen) == {GPU_WORKER}
    finally:
        mc.shutdown_default_pools()


@pytest.mark.timeout(120)
def test_without_gpus_tasks_run_anywhere(gpu_dask_service: DaskService) -> None:
    with mc.Pool(backend="dask", address=gpu_dask_service.address) as pool:
        assert pool.workers == 2
        seen = pool.map(cf.device_seen, [0.3] * 4)
    assert "w1" in {name for name, _ in seen}, seen  # the worker without a GPU took its share
