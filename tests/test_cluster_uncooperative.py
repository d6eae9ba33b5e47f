"""The cluster backends' shared code (``_remote_run`` in the worker, ``rebuild`` in
the caller) with an exception class that refuses ``__cause__``/``__traceback__``:
the item fails with its own error, and the pool goes on."""

from __future__ import annotations

from typing import Any

import pytest

import manycore as mc
from badpickle import GOOD, FrozenError, RefusingError, times_good, uncooperative_on

pytestmark = pytest.mark.cluster
pytest.importorskip("distributed")


@pytest.mark.parametrize(("kind", "cls"), [("frozen", FrozenError), ("refusing", RefusingError)])
def test_uncooperative_exception_on_dask(
    dask_client: Any, kind: str, cls: type[BaseException]
) -> None:
    with mc.Pool(backend="dask", client=dask_client) as pool:
        out = pool.map(uncooperative_on, [(kind, x) for x in range(4)], on_error="collect")
        err = out[2].exception
        if isinstance(err, mc.RemoteError):
            assert err.type_name.endswith(cls.__qualname__)
        else:
            assert type(err) is cls
        assert [out[0], out[1], out[3]] == [0, GOOD, 3 * GOOD]
        assert pool.map(times_good, range(4)) == [0, GOOD, 2 * GOOD, 3 * GOOD]
