"""How a layer's door loads: lazily, so that a worker importing one module of a
layer does not pay for the rest of it (worker start-up is worker time)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from typing import Any


def lazy_door(
    package: str, sources: dict[str, str], modules: dict[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a layer's ``__init__``: ``sources`` maps each
    exported name to the module of the layer that defines it; ``modules`` maps the
    public name a module of the layer is exported under to that module."""
    namespace = importlib.import_module(package).__dict__
    aliases = modules or {}

    def load(name: str) -> Any:
        if name in aliases:
            value: object = importlib.import_module(f"{package}.{aliases[name]}")
        elif name in sources:
            value = getattr(importlib.import_module(f"{package}.{sources[name]}"), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # later lookups skip this function
        return value

    return load, lambda: sorted({*sources, *aliases})
