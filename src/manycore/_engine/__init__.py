"""Worker processes and their pipes: the engine (data flow drawn at the top of
``_engine.py``), worker handles, crash and timeout verdicts, launching (spawn, fork,
the fork server) and the loop each worker runs.

Only the processes backend uses it. Its door loads lazily: a worker that imports
its own loop from here does not load the parent's side."""
