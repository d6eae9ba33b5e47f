"""The ``manycore`` command: ``info``, ``run``, ``bench`` and ``demo``. A user
of the public API like any other."""
