"""constraints.txt: write it from a fresh venv, or say what differs from it.

    python .ci/constraints.py write            # stdout: header + this venv's pip freeze
    python .ci/constraints.py newer FILE       # this venv's releases that differ from FILE

Run with the venv's own python (``make constraints`` and ``make test-latest`` do).
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from importlib import metadata

HEADER = """\
# Exact releases that `make test` (and demo, bench, lint, conformance) install: pip,
# the build backend and every dependency of the test, bench, dev and conformance
# extras, as resolved on {python}. pyproject.toml keeps ranges: these pins only
# make CI reproducible. `make test-latest` runs the suite on the newest releases
# instead (non-blocking in .ci/run). Regenerate with `make constraints` (a fresh
# venv, then pip freeze).
"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write() -> int:
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    pins = sorted(
        (line for line in frozen if "==" in line and not line.startswith("#")),
        key=lambda line: _key(line.split("==")[0]),
    )
    python = f"{platform.python_implementation()} {platform.python_version()}"
    sys.stdout.write(HEADER.format(python=python) + "\n".join(pins) + "\n")
    return 0


def newer(path: str) -> int:
    pinned = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pinned[_key(name)] = version.split(";")[0].strip()
    changed = []
    for dist in metadata.distributions():
        name = _key(dist.metadata["Name"] or "")
        if name in ("manycore", "setuptools"):
            continue  # a venv's own setuptools builds nothing: pip builds in a fresh env
        if name in pinned and pinned[name] != dist.version:
            changed.append(f"{name} {dist.version} (pinned: {pinned[name]})")
        elif name not in pinned:
            changed.append(f"{name} {dist.version} (not pinned)")
    if not changed:
        print(f"the same releases as {path}")
    for line in sorted(set(changed)):
        print(f"not as in {path}: {line}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["write"]:
        sys.exit(write())
    if len(sys.argv) == 3 and sys.argv[1] == "newer":
        sys.exit(newer(sys.argv[2]))
    sys.exit(__doc__)
