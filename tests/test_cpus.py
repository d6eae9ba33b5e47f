"""Usable CPUs: affinity and cgroup quota are respected."""

from __future__ import annotations

import os
from pathlib import Path

from manycore import usable_cpus
from manycore._core import _cpus


def test_usable_cpus_is_positive_and_bounded() -> None:
    n = usable_cpus()
    assert 1 <= n <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert n <= len(os.sched_getaffinity(0))


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cpus.cgroup_quota(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cpus.cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cpus.cgroup_quota(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cpus.cgroup_quota(tmp_path) is None


def test_default_pool_size_follows_usable_cpus() -> None:
    import manycore as mc

    with mc.Pool(backend="serial") as pool:
        assert pool.workers == usable_cpus()
