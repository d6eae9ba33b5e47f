"""The backend registry: built-in backends load when named, and no backend's name
is decided outside ``manycore/backends``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import manycore as mc
from manycore.backends import backend_names, get_backend

SRC = Path(mc.__file__).resolve().parent

# A showcase written as a user's program of the public API (its table names them).
USER_CODE = {"_cli/_demo.py"}


def test_importing_the_registry_loads_no_backend() -> None:
    code = (
        "import sys, manycore.backends as b; b.backend_names(); "
        "print(sorted(m for m in sys.modules if m.startswith('manycore.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = eval(out)
    assert not [m for m in loaded if m.startswith("manycore._engine")], loaded
    assert [m for m in loaded if m.startswith("manycore.backends.")] == ["manycore.backends._base"]


def test_a_backend_loads_when_named() -> None:
    assert get_backend("serial").name == "serial"
    assert {"serial", "threads", "processes", "asyncio"} <= set(backend_names())


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants of a module, docstrings left out."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def test_no_backend_is_named_outside_backends() -> None:
    """A string equal to a backend's name outside backends/ (a line that marks it
    "not a backend name" aside) is a decision the registry should make."""
    names = set(backend_names())
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("backends/") or rel == "__init__.py" or rel in USER_CODE:
            continue
        text = path.read_text()
        lines = text.splitlines()
        hits = [
            f"{line}: {s!r}"
            for line, s in _strings(ast.parse(text))
            if s in names and "not a backend name" not in lines[line - 1]
        ]
        if hits:
            found[rel] = hits
    assert not found, found
