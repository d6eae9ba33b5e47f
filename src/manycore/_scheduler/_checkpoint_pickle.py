"""Loading what a checkpoint stored: pickles may name paths that have since moved.

A value or exception pickled by an older manycore names the module that
defined its class then: ``manycore._errors.TaskTimeout``, ``manycore._failure
.Failure`` (flat modules, before the layer folders), or private rebuilders such
as ``manycore._errors._rebuild_timeout``. Such a name is looked up in the
module that holds it now (a public class there is the very ``manycore.<name>``;
pickles made since name that path). Only a pickle that fails to load as it is
pays for this.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

__all__ = ["load"]

# Where each flat module of before the layer folders lives now (git mv).
_RENAMED = {
    "_api": "_api._calls",
    "_cli": "_cli._main",
    "_clibench": "_cli._bench_cmd",
    "_cliio": "_cli._io",
    "_clirun": "_cli._run",
    "_clitarget": "_cli._target",
    "_engine_workers": "_engine._workers",
    "_scheduler": "_scheduler._maprun",
    "_taskdef": "_tasks._define",
    "_taskgraph": "_tasks._graph",
    "_tasks": "_tasks._nodes",
    "_taskrun": "_tasks._run",
}
_LAYERS = {
    "_core": "batch cpus errors failure futures remote state",
    "_transport": "bigglobals coderef mapcache payload serialize shared shm sync wire",
    "_engine": "engine faults forkserver inherit launch turns worker workerproc",
    "_observe": "profile_report progress recommend runqueue stats",
    "_scheduler": "checkpoint checkpoint_file fingerprint submission",
    "_api": "amap auto options pool pool_sync profile validate",
    "_cli": "demo info",
}
_MOVED = {
    f"manycore.{old}": f"manycore.{new}"
    for old, new in [
        *(
            (f"_{name}", f"{layer}._{name}")
            for layer, names in _LAYERS.items()
            for name in names.split()
        ),
        *_RENAMED.items(),
    ]
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        return super().find_class(_MOVED.get(module, module), name)


def load(payload: bytes) -> Any:
    """``pickle.loads(payload)``, finding what old paths name where it is now."""
    try:
        return pickle.loads(payload)
    except (ImportError, AttributeError):
        return _Unpickler(io.BytesIO(payload)).load()
