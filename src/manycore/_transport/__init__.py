"""Bytes and buffers: pickling (by reference where possible, by value with the
real file names otherwise), frames on a pipe, shared-memory segments, shared arrays,
large globals sent once, and the shared primitives (queues, locks, values).

Imports only ``_core``. Other layers use only the names below."""

from __future__ import annotations

from manycore._core import lazy_door

__all__ = [
    "FN_LIMIT",
    "PROTOCOL",
    "FnIds",
    "Mappings",
    "Shared",
    "Shipment",
    "bigglobals",
    "by_reference",
    "ctrl_c",
    "dumps",
    "dumps_code_with",
    "dumps_fn",
    "encode_args",
    "loads_code",
    "pack_shared",
    "pinned",
    "shared_arrays",
    "shmem",
    "sync_primitives",
    "why",
    "wire",
    "with_shipments",
]

# The door: names other layers use, loaded on first use (see manycore._core._door).
__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "FN_LIMIT": "_payload",
        "FnIds": "_payload",
        "Mappings": "_mapcache",
        "PROTOCOL": "_pickling",
        "Shared": "_payload",
        "Shipment": "_bigglobals",
        "by_reference": "_serialize",
        "ctrl_c": "_pickling",
        "dumps": "_pickling",
        "dumps_code_with": "_serialize",
        "dumps_fn": "_serialize",
        "encode_args": "_payload",
        "loads_code": "_pickling",
        "pack_shared": "_payload",
        "pinned": "_bigglobals",
        "why": "_pickling",
        "with_shipments": "_serialize",
    },
    modules={
        "bigglobals": "_bigglobals",
        "shared_arrays": "_shared",
        "shmem": "_shm",
        "sync_primitives": "_sync",
        "wire": "_wire",
    },
)

TYPE_CHECKING = False  # (not typing's: workers import this; see test_startup_imports)
if TYPE_CHECKING:
    from manycore._transport import _bigglobals as bigglobals
    from manycore._transport import _shared as shared_arrays
    from manycore._transport import _shm as shmem
    from manycore._transport import _sync as sync_primitives
    from manycore._transport import _wire as wire
    from manycore._transport._bigglobals import Shipment, pinned
    from manycore._transport._mapcache import Mappings
    from manycore._transport._payload import FN_LIMIT, FnIds, Shared, encode_args, pack_shared
    from manycore._transport._pickling import PROTOCOL, ctrl_c, dumps, loads_code, why
    from manycore._transport._serialize import (
        by_reference,
        dumps_code_with,
        dumps_fn,
        with_shipments,
    )
