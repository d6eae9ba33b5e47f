"""Names a user brings from another library to :class:`manycore.Pool`: each one
gets an error that says manycore's spelling, or which facade keeps the other
library's interface, instead of a bare ``TypeError``/``AttributeError``."""

from __future__ import annotations

__all__ = ["foreign_method", "refuse_foreign_options"]

_MP = "manycore.multiprocessing.Pool"
_CF = "manycore.Executor"

# option -> (manycore's spelling, the facade that takes the name as it is)
_OPTIONS = {
    "processes": ("workers=", _MP),  # multiprocessing's option: not a backend name
    "initializer": ("init=", f"{_MP} or {_CF}"),
    "initargs": ("init_args=", f"{_MP} or {_CF}"),
    "maxtasksperchild": ("max_tasks_per_worker=", _MP),
    "max_workers": ("workers=", _CF),
    "max_tasks_per_child": ("max_tasks_per_worker=", _CF),
    "mp_context": ("start_method=", _CF),
    "n_jobs": ("workers=", 'joblib with parallel_config(backend="manycore")'),
}

# method -> what manycore's Pool does instead
_METHODS = {
    "apply": "pool.submit(fn, *args).result()",
    "apply_async": "pool.submit(fn, *args), a concurrent.futures.Future",
    "map_async": "pool.submit per item, or mc.amap from a coroutine",
    "starmap_async": "pool.submit per item",
    "imap_unordered": "pool.imap(fn, items, ordered=False)",
    "join": "close() (or leaving the with block), which waits for the work",
}


def refuse_foreign_options(given: dict[str, object]) -> None:
    """A ``TypeError`` naming the first option of ``given`` that is another
    library's name for one of Pool's, with both ways forward."""
    for name in given:
        if name in _OPTIONS:
            ours, facade = _OPTIONS[name]
            raise TypeError(
                f"Pool() got an unexpected keyword argument {name!r}: manycore's Pool "
                f"spells it {ours} (the name {name}= is kept by {facade})"
            )


def foreign_method(cls: str, name: str) -> str:
    """The message of the ``AttributeError`` for ``name`` missing on ``cls``."""
    missing = f"{cls!r} object has no attribute {name!r}"
    if name not in _METHODS:
        return missing
    return f"{missing}: use {_METHODS[name]}, or {_MP} for multiprocessing.Pool's interface"
