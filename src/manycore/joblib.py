"""``import manycore.joblib``: joblib's ``Parallel`` gets a ``"manycore"`` backend.

    import joblib
    import manycore.joblib  # noqa: F401

    with joblib.parallel_config(backend="manycore"):
        joblib.Parallel(n_jobs=4)(joblib.delayed(f)(x) for x in xs)

The same as calling :func:`manycore.register_joblib`.
"""

from __future__ import annotations

from manycore._api import register_joblib

__all__ = ["register_joblib"]

register_joblib()
