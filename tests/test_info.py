"""``manycore info``: the machine's facts, as text and as JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import manycore as mc
from manycore._cli import _info
from test_demo import run_cli


def test_info_json_matches_what_manycore_uses() -> None:
    proc = run_cli("info", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["cpus"]["usable"] == mc.usable_cpus()
    assert facts["start_methods"] == list(mc.START_METHODS)
    # conftest registers a toy backend in this process only (not in the one run)
    assert set(facts["backends"]) == set(mc.backend_names()) - {"toy"}
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


def test_a_missing_engine_names_the_package_to_install() -> None:
    facts = _info.collect()
    facts["backends"] = {**facts["backends"], "dask": False, "ray": False}
    text = _info.render(facts)
    assert "backend dask: not installed (pip install 'dask[distributed]')" in text
    assert "backend ray: not installed (pip install 'ray')" in text


def test_no_text_tells_to_pip_install_manycore_by_name() -> None:
    # manycore is installed from its checkout: "pip install 'manycore[dask]'"
    # asks PyPI for a package that is not there.
    root = Path(__file__).resolve().parent.parent
    files = [
        root / "README.md",
        *sorted((root / "docs").glob("*.md")),
        *sorted((root / "src" / "manycore").rglob("*.py")),
    ]
    wrong = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for found in re.finditer(r"pip\s+install\s+[\"']?manycore\b", text):
            line = text.count("\n", 0, found.start()) + 1
            wrong.append(f"{path.relative_to(root)}:{line}")
    assert not wrong
