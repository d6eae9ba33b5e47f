"""``mc.register_joblib()``: joblib's ``Parallel`` gets a ``"manycore"`` backend.
(joblib is imported only here, when asked: ``import manycore`` does not need it.)"""

from __future__ import annotations

from manycore._core import public

__all__ = ["register_joblib"]


@public
def register_joblib() -> None:
    """Register the ``"manycore"`` backend with joblib, so that
    ``with joblib.parallel_config(backend="manycore"): Parallel(n_jobs=4)(...)``
    (and scikit-learn's ``n_jobs``) runs on manycore's workers. ``import
    manycore.joblib`` does the same. Raises ImportError without joblib."""
    from joblib import register_parallel_backend

    from manycore._api._joblib_backend import ManycoreBackend

    register_parallel_backend("manycore", ManycoreBackend)
