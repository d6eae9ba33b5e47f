"""``on_error``, applied in one place: to each finished stretch of a map run, and
to the whole list of a checkpointed run (see ``_maprun`` and ``_checkpoint``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Set
from typing import Any

from manycore._core import Batch, Failure, set_cause, tag_with_index

__all__ = ["apply_on_error", "on_batch", "own_copy"]


def apply_on_error(
    on_error: str, values: list[Any], failed: Set[int], failure: Callable[[int], Failure]
) -> tuple[int, list[Any], BaseException | None]:
    """What ``on_error`` makes of ``values``, those at the offsets in ``failed``
    having failed (``failure(offset)``: its :class:`Failure`): (how many of the
    values it settles, the values to hand out, the error to raise after them).
    "raise": the values before the first failure, then its error; "skip": the
    values that did not fail; "collect": a Failure in the place of each failed one."""
    if not failed:
        return len(values), values, None
    if on_error == "raise":
        first = min(failed)
        return first, values[:first], failure(first).exception
    if on_error == "skip":
        return len(values), [v for i, v in enumerate(values) if i not in failed], None
    out = list(values)
    for offset in failed:
        out[offset] = failure(offset)
    return len(values), out, None


def on_batch(
    on_error: str, batch: Batch, values: list[Any], failures: dict[int, BaseException]
) -> tuple[int, list[Any], BaseException | None]:
    """:func:`apply_on_error` for (part of) a finished batch: ``failures`` by
    offset, each made a :class:`Failure` naming its input only if handed out."""

    def failure(offset: int) -> Failure:
        index = batch.start + offset
        return Failure(tag_with_index(failures[offset], index), index, batch.items[offset])

    return apply_on_error(on_error, values, failures.keys(), failure)


def own_copy(exc: BaseException, offset: int) -> BaseException:
    """Each item of a batch that failed as a whole gets its own exception object,
    so that index notes do not pile up on one shared object."""
    if offset == 0:
        return exc
    try:
        twin = copy.copy(exc)
        notes = [n for n in getattr(exc, "__notes__", []) if not n.startswith("manycore:")]
        # Past the class's own __setattr__ (a frozen dataclass exception refuses it).
        object.__setattr__(twin, "__notes__", notes)
    except Exception:  # the user's class would not copy: share the one object
        return exc
    set_cause(twin, exc.__cause__)
    return twin
