"""How a layer's door loads: lazily, so that a worker importing one module of a
layer does not pay for the rest of it (worker start-up is worker time)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_door(
    package: str, sources: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a layer's ``__init__``: ``sources`` maps each
    exported name to the module of the layer that defines it (a module exported under
    a public name maps to itself)."""
    namespace = importlib.import_module(package).__dict__

    def load(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{source}")
        value = getattr(module, name, module)  # a module exported under a public name
        namespace[name] = value  # later lookups skip this function
        return value

    return load, lambda: sorted(sources)
