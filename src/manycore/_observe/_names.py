"""The backend of each kind (inline, thread, coroutine, process), by the names the
registry in ``manycore/backends`` gives them: this layer sits beside ``backends/`` and
may not import it, so whoever asks for a recommendation passes the names in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["BackendNames"]

_KINDS = ("inline", "thread", "coroutine", "process")  # cheapest first


@dataclass(frozen=True)
class BackendNames:
    """The backend of each kind, as the registry names them."""

    inline: str  # the plain loop
    thread: str
    coroutine: str
    process: str

    @classmethod
    def of(cls, backend_for: Callable[[str], str]) -> BackendNames:
        """The names ``backend_for(kind)`` gives (the registry's function)."""
        return cls(**{kind: backend_for(kind) for kind in _KINDS})

    def kind(self, backend: str) -> str | None:
        """The kind of ``backend``; None for one of no kind here (a cluster's)."""
        return next((k for k in _KINDS if getattr(self, k) == backend), None)

    def cost_rank(self, backend: str) -> int:
        """Where ``backend`` stands, cheapest first; one of no kind comes last."""
        kind = self.kind(backend)
        return len(_KINDS) if kind is None else _KINDS.index(kind)

    def cheapest_first(self, names: Sequence[str]) -> list[str]:
        """Backend names in the order their costs rise (for tables and plots)."""
        return sorted(names, key=self.cost_rank)
