"""What `make test` installs: pinned releases (constraints.txt) inside the
library's own ranges, and metadata that builds without deprecation warnings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # Python 3.11+
Requirement = pytest.importorskip("packaging.requirements").Requirement


def _pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[Requirement(name).name.lower().replace("_", "-")] = version
    return pins


def test_constraints_pin_every_requirement_inside_its_range() -> None:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["test"], *extras["bench"], *extras["dev"]]
    wanted += _pyproject()["build-system"]["requires"]
    pins = _pins()
    for text in wanted:
        req = Requirement(text)
        key = req.name.lower().replace("_", "-")
        assert key in pins, f"constraints.txt does not pin {req.name} (run make constraints)"
        assert req.specifier.contains(pins[key]), f"{req.name}=={pins[key]} is outside {text!r}"
    assert "pip" in pins
    # The ranges stay ranges: only constraints.txt pins.
    assert not [t for t in project["dependencies"] if "==" in t]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(
    ("stamp", "extra"),
    [
        (".installed-test", "'.[test]'"),
        (".installed-base", "."),
        (".installed-bench", "'.[bench]'"),
    ],
)
def test_make_installs_the_pinned_releases(stamp: str, extra: str, tmp_path: Path) -> None:
    # -n: print the commands only; VENV elsewhere, so none is up to date.
    venv = tmp_path / "venv"
    proc = subprocess.run(
        ["make", "-n", f"VENV={venv}", f"{venv}/{stamp}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    pinned = "--constraint constraints.txt --build-constraint constraints.txt"
    assert f"pip install --quiet {pinned} -e {extra}\n" in proc.stdout
    assert "--constraint constraints.txt --upgrade pip" in proc.stdout  # pip itself too


def test_license_metadata_is_spdx() -> None:
    # A license table and a license classifier each made setuptools print a
    # BuildBackendWarning at every install (~120 lines in all).
    data = _pyproject()
    assert data["project"]["license"] == "MIT"
    assert data["project"]["license-files"] == ["LICENSE"]
    assert not [c for c in data["project"]["classifiers"] if c.startswith("License ::")]
    assert data["build-system"]["requires"] == ["setuptools>=77"]
