"""The layering of ../shared/DESIGN.md, checked on the source: each layer is a folder
reached through its door, imports run only downward, and no backend is named above
``backends/``. Every import counts, function-local and ``TYPE_CHECKING`` ones too."""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "manycore"

# High to low; layers on one line do not import each other.
ORDER = [
    ("_cli",),
    ("_tasks",),
    ("_api",),
    ("_scheduler",),
    ("backends", "_observe"),
    ("_engine",),
    ("_transport",),
    ("_core",),
]
RANK = {layer: rank for rank, layers in enumerate(ORDER) for layer in layers}
MAX_LINES = 600


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer a dotted name sits in; None for the package door itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def imports(path: pathlib.Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for every import in a file, wherever it is."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return [item for item in found if item[1] == "manycore" or item[1].startswith("manycore.")]


def targets(module: str, names: list[str]) -> list[str]:
    """The modules an import loads: `from manycore._x import _y` loads `_y` if it is one."""
    out = [module]
    for name in names:
        candidate = SRC.parent.joinpath(*f"{module}.{name}".split("."))
        if candidate.with_suffix(".py").exists() or candidate.is_dir():
            out.append(f"{module}.{name}")
    return out


def violations() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        here = module_name(path)
        mine = layer_of(here)
        if mine is None:
            # manycore/__init__.py and __main__: the public door may import anything;
            # the public modules beside it are checked by test_public_modules_are_thin.
            continue
        for line, module, names in imports(path):
            where = f"{path.relative_to(SRC.parent)}:{line}"
            for target in targets(module, names):
                found += check(where, here, mine, target, names)
    return sorted(set(found))


def check(where: str, here: str, mine: str, target: str, names: list[str]) -> list[str]:
    theirs = layer_of(target)
    if theirs is None:
        if mine == "_cli":
            return []  # the command line is a user of the public API
        return [f"{where}: {here} imports the public package {target}"]
    if theirs == mine:
        return []
    problems = []
    if RANK[theirs] < RANK[mine] or (RANK[theirs] == RANK[mine]):
        problems.append(f"{where}: {here} ({mine}) imports upward or sideways: {target}")
    door = f"manycore.{theirs}"
    if theirs == "backends" and target == "manycore.backends._base" and mine == "_scheduler":
        pass
    elif target != door:
        problems.append(f"{where}: {here} reaches past the door of {theirs}: {target}")
    private = [n for n in names if n.startswith("_") and f"{target}.{n}" not in (target,)]
    if target == door and private:
        problems.append(f"{where}: {here} imports private names of {theirs}: {private}")
    if theirs == "_engine" and here != "manycore.backends.processes":
        problems.append(f"{where}: only the processes backend may use the engine, not {here}")
    if mine == "_engine" and RANK[theirs] < RANK["_transport"]:
        problems.append(f"{where}: the engine imports above the transport: {target}")
    return problems


def test_imports_run_downward_through_doors():
    found = violations()
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_is_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


# Public modules beside the package door: ``import manycore.multiprocessing``,
# ``import manycore.joblib``. Each is a thin door of its own: manycore's code is
# reached only through a layer's door (what they add lives in that layer).
PUBLIC_MODULES = sorted(p for p in SRC.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))


@pytest.mark.parametrize("path", PUBLIC_MODULES, ids=lambda p: p.name)
def test_public_modules_are_thin(path):
    for line, module, names in imports(path):
        layer = layer_of(module)
        where = f"{path.name}:{line}"
        assert layer is not None and module == f"manycore.{layer}", f"{where}: past a door"
        assert not [n for n in names if n.startswith("_")], f"{where}: a private name"
    body = ast.parse(path.read_text()).body
    assert not [n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], path.name


if __name__ == "__main__":  # a list to work from
    print("\n".join(violations()))


DOORS = sorted(p for p in SRC.glob("_*/__init__.py"))


@pytest.mark.parametrize("door", DOORS, ids=lambda p: p.parent.name)
def test_each_door_lists_its_names_once_and_loads_them(door):
    """A door's ``__all__``, its lazy table and its ``TYPE_CHECKING`` imports name
    the same things, and every name loads."""
    import importlib

    module = importlib.import_module(module_name(door))
    listed = set(getattr(module, "__all__", ()))
    promised = {}  # name -> what its TYPE_CHECKING import gives
    for node in ast.walk(ast.parse(door.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                source = importlib.import_module(imp.module)
                for a in imp.names:
                    promised[a.asname or a.name] = _promised(source, a.name)
    assert listed == set(promised)
    for name in listed:  # the lazy table loads the very object type checkers see
        if promised[name] is _TYPE_ONLY:
            with pytest.raises(AttributeError):
                getattr(module, name)
        else:
            assert getattr(module, name) is promised[name], name


_TYPE_ONLY = object()  # a type alias made under TYPE_CHECKING: nothing at run time


def _promised(source: object, name: str) -> object:
    import importlib

    if hasattr(source, name):
        return getattr(source, name)
    try:  # a module of the layer, exported under a public name
        return importlib.import_module(f"{source.__name__}.{name}")  # type: ignore[attr-defined]
    except ModuleNotFoundError:
        return _TYPE_ONLY
