"""Every ```python block in docs/ and the README runs and its asserts hold."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
RUNNER = Path(__file__).resolve().parent / "docrun.py"


def _blocks() -> list[tuple[str, str, str]]:
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for i, code in enumerate(BLOCK.findall(page.read_text())):
            found.append((page.name, f"{page.name}-{i}", code))
    return found


BLOCKS = _blocks()
_outcomes: dict[str, dict[str, str | None]] = {}


def _page_outcomes(page: str) -> dict[str, str | None]:
    """The outcome of each block of ``page``, all run in one interpreter (starting
    one per block would cost a third of a second each, and there are dozens)."""
    if page not in _outcomes:
        blocks = [[name, code] for p, name, code in BLOCKS if p == page]
        with tempfile.TemporaryDirectory() as tmp:
            source, result = Path(tmp, "blocks.json"), Path(tmp, "outcomes.json")
            source.write_text(json.dumps(blocks))
            subprocess.run(
                [sys.executable, str(RUNNER), str(source), str(result)],
                capture_output=True,
                cwd=tmp,
                timeout=150,
            )
            done = json.loads(result.read_text()) if result.exists() else []
        _outcomes[page] = {name: out for (name, _), out in zip(blocks, done, strict=False)}
    return _outcomes[page]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("page", "code"), [(p, c) for p, _, c in BLOCKS], ids=[n for _, n, _ in BLOCKS]
)
def test_doc_example_runs(
    page: str, code: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    name = request.node.callspec.id
    outcomes = _page_outcomes(page)
    if name in outcomes:
        assert outcomes[name] is None, outcomes[name]
        return
    # The page's interpreter died before this block (or at it): run it alone.
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
