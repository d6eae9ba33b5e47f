"""Bytes and buffers: pickling (by reference where possible, by value with the
real file names otherwise), frames on a pipe, shared-memory segments, shared arrays,
large globals sent once, and the shared primitives (queues, locks, values).

Imports only ``_core``. Other layers use only the names below."""
