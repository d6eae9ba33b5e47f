"""The vocabulary every layer shares: errors (one helper per message), the batch
contract between scheduler and backends (``Batch``/``BatchResult``), ``Failure``,
remote tracebacks, awaitable futures, CPU counts and the worker's task state.

Imports nothing else of manycore. Other layers use only the names below."""
