"""``manycore info``: the machine's facts, as text and as JSON."""

from __future__ import annotations

import json

import manycore as mc
from test_demo import run_cli


def test_info_json_matches_what_manycore_uses() -> None:
    proc = run_cli("info", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["cpus"]["usable"] == mc.usable_cpus()
    assert facts["start_methods"] == list(mc.START_METHODS)
    assert set(facts["backends"]) == set(mc.backend_names())
    assert facts["backends"]["processes"] is True and facts["backends"]["threads"] is True
    assert isinstance(facts["free_threading_build"], bool)
    assert all(isinstance(lib["threads"], int) for lib in facts["blas"])


def test_info_text_and_bad_arguments() -> None:
    proc = run_cli("info", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"CPUs: {mc.usable_cpus()} usable" in proc.stdout
    assert "backend processes: ready" in proc.stdout
    bad = run_cli("info", "--colour", timeout=60)
    assert bad.returncode == 2 and "unrecognized arguments: --colour" in bad.stderr
