"""The cluster backends' worker side: what runs inside a Dask or Ray task, and the
placeholders that stand, in a batch's arguments, for objects sent apart.

Containers are rebuilt only where a placeholder was put in or taken out, so
every other argument reaches the function as it was given (a namedtuple stays
a namedtuple, an ``OrderedDict`` an ``OrderedDict``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, Union

from manycore._core import BatchResult, pack_exception

if TYPE_CHECKING:
    from manycore._core import ErrorWire

__all__ = [
    "INIT_FAILED",
    "Answer",
    "Box",
    "Placeholder",
    "ResultRef",
    "Setup",
    "all_scalars",
    "replace",
    "replace_values",
    "run_boxed",
    "run_remote",
]

INIT_FAILED = "manycore:init-failed"  # first element of run_remote's answer then

# What run_remote answers: (INIT_FAILED, error), or (values, errors packed by
# offset, compute seconds, host:pid, slowest (offset, seconds)).
Answer = Union[
    "tuple[str, ErrorWire]",
    "tuple[list[object], dict[int, ErrorWire] | None, float, str, list[tuple[int, float]] | None]",
]
K = TypeVar("K")
# A pool's worker state: (token, init, init_args); init runs once per worker process.
Setup = tuple[str, Callable[..., object], tuple[object, ...]]


class Placeholder:
    """Stands in for an object sent apart (``refs[index]`` in ``run_remote``);
    with ``first_value``, that ref is another batch's answer and its first value
    is meant."""

    __slots__ = ("first_value", "index")

    def __init__(self, index: int, first_value: bool = False):
        self.index = index
        self.first_value = first_value

    def __reduce__(self) -> tuple[type[Placeholder], tuple[int, bool]]:
        return (Placeholder, (self.index, self.first_value))


class ResultRef:
    """An argument that is the value of a finished one-item batch of the same
    pool, left on the cluster (see ``ClusterBackend.result_ref``)."""

    __slots__ = ("handle",)

    def __init__(self, handle: object):
        self.handle = handle  # the engine's, passed back to it


_SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None)})


def all_scalars(items: list[object]) -> bool:
    """Every item is a plain scalar: nothing in them to replace (most maps)."""
    return _SCALARS.issuperset(map(type, items))


def replace(obj: object, leaf: Callable[[object], object]) -> object:
    """``obj`` with ``leaf(x)`` for each element ``x`` inside tuples, lists and
    dict values (``leaf`` returns ``x`` itself to keep it); a container is
    rebuilt, as its own type, only if something in it changed. (Plain scalars
    are never a leaf worth replacing: skipped without a call, as most items are.)"""
    if type(obj) in _SCALARS:
        return obj
    if isinstance(obj, (tuple, list)):
        items = [replace(x, leaf) for x in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        if isinstance(obj, tuple) and hasattr(obj, "_make"):  # a namedtuple
            return obj._make(items)
        return type(obj)(items)
    if isinstance(obj, dict):
        return replace_values(obj, leaf)
    return leaf(obj)


def replace_values(obj: dict[K, object], leaf: Callable[[object], object]) -> dict[K, object]:
    """:func:`replace` for a dict: its values replaced, a copy only if one changed."""
    changed = {k: replace(x, leaf) for k, x in obj.items()}
    if all(changed[k] is x for k, x in obj.items()):
        return obj
    out = obj.copy()
    out.update(changed)
    return out


# ---------------------------------------------------------------- worker side

_inited: dict[
    str, tuple[object, object, BaseException | None]
] = {}  # token -> state, shared, error
_init_lock = threading.Lock()
_KEEP_STATES = 16  # pools whose worker state one process keeps, at most


def run_remote(
    fn: Callable[..., object],
    items: list[object],
    how: tuple[bool, bool, int, float | None],
    kwargs: dict[str, object] | None,
    setup: Setup | None,
    shared: object,
    *refs: object,
) -> Answer:
    """Run a batch on a cluster worker (the engine has resolved ``refs``): its
    values, its errors packed, the compute time, where it ran (host:pid) and
    its slowest items (``how``: star-args, time items, the submitting process,
    the batch's budget: then only the items run within it have values);
    or ``(INIT_FAILED, error)``."""
    import os
    import socket

    from manycore._core import cpus, run_batch, task_state

    star, time_items, origin, budget = how
    if origin != os.getpid() and cpus.worker_share() is None:
        # A worker process of the cluster: nested calls run here, as in a process
        # worker, and a pool one starts ends with that call (the worker outlives
        # this pool; a pool left behind would outlive it too).
        cpus.set_worker_share(1, pools_per_call=True)

    if refs:
        items = [replace(x, lambda leaf: _fill(leaf, refs)) for x in items]
        if kwargs:
            kwargs = replace_values(kwargs, lambda leaf: _fill(leaf, refs))
    state, shared, error = _worker_state(setup, shared)
    if error is not None:
        return (INIT_FAILED, pack_exception(error))
    previous = task_state.set_thread(state, shared)
    try:
        if budget is None:
            result = run_batch(fn, items, star, kwargs, Exception, time_items)
        else:
            result = _run_within(budget, fn, items, star, kwargs, time_items)
    finally:
        task_state.set_thread(*previous)
    packed = None
    if result.failures:
        packed = {k: pack_exception(e) for k, e in result.failures.items()}
    where = f"{socket.gethostname()}:{os.getpid()}"
    return result.values, packed, result.elapsed, where, result.slowest


def _run_within(
    budget: float,
    fn: Callable[..., object],
    items: list[object],
    star: bool,
    kwargs: dict[str, object] | None,
    time_items: bool,
) -> BatchResult:
    """``run_batch`` over the first of ``items`` that fit in ``budget`` seconds
    (one at least), in slices sized from the time the ones before took."""
    import time

    from manycore._core import run_batch

    began = time.perf_counter()
    parts: list[BatchResult] = []
    done, size = 0, 1
    while done < len(items):
        parts.append(run_batch(fn, items[done : done + size], star, kwargs, Exception, time_items))
        done += size
        spent = time.perf_counter() - began
        if spent >= budget:
            break
        # Half the time left, at the pace so far: a slower item overshoots little.
        size = max(1, min(len(items) - done, int((budget - spent) * done / spent / 2)))
    return _joined(parts)


def _joined(parts: list[BatchResult]) -> BatchResult:
    """The results of consecutive slices of a batch, as one."""
    values: list[object] = []
    failures: dict[int, BaseException] = {}
    slowest: list[tuple[int, float]] = []
    for part in parts:
        failures.update((len(values) + k, e) for k, e in (part.failures or {}).items())
        slowest += [(len(values) + k, s) for k, s in part.slowest or ()]
        values += part.values
    slowest = sorted(slowest, key=lambda x: -x[1])[:5] if parts[0].slowest is not None else []
    elapsed = sum(p.elapsed for p in parts)
    return BatchResult(values, failures or None, elapsed, slowest=slowest or None)


class Box:
    """A batch's items and options passed on as one object: the engines look into
    every list argument (a batch's items) element by element (Dask) or encode it
    apart (Ray), which costs more than running tiny items."""

    __slots__ = ("args",)

    def __init__(self, args: tuple[object, ...]):
        self.args = args

    def __reduce__(self) -> tuple[type[Box], tuple[tuple[object, ...]]]:
        return (Box, (self.args,))


def run_boxed(fn: Any, box: Box, shared: object, *refs: object) -> Answer:
    """``run_remote``, its arguments taken out of the box (on the worker)."""
    items, how, kwargs, setup = box.args
    return run_remote(fn, items, how, kwargs, setup, shared, *refs)  # type: ignore[arg-type]


def _fill(leaf: object, refs: tuple[Any, ...]) -> object:  # objects, or another batch's Answer
    if not isinstance(leaf, Placeholder):
        return leaf
    ref = refs[leaf.index]
    return ref[0][0] if leaf.first_value else ref


def _worker_state(
    setup: Setup | None, shared: object
) -> tuple[object, object, BaseException | None]:
    """This pool's worker state in this process: ``init`` runs once (a failure
    too is remembered, not retried for every batch)."""
    if setup is None:
        return None, shared, None
    token, init, init_args = setup
    with _init_lock:  # several threads of one Dask worker: init once
        if token not in _inited:
            try:
                _inited[token] = (init(*init_args), shared, None)
            except Exception as exc:
                _inited[token] = (None, shared, exc)
            while len(_inited) > _KEEP_STATES:  # pools long gone, on a long-lived worker
                del _inited[next(iter(_inited))]
        return _inited[token]
