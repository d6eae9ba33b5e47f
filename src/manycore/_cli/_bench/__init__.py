"""The benchmark suite: manycore against a plain loop and its peers, in one run.

Every workload runs on every runner in the same process, one runner after the
other, with the same number of workers:

    (a) 1,000,000 x ``x*x``               (b) 2,000 x ~1 ms of pure-Python work
    (c) 4 x ~0.5 s of pure-Python work    (d) 64 NumPy arrays of 8 MB -> ``a.sum()``
    (e) one ``submit(f, x).result()`` round trip, against a raw ``multiprocessing.Pipe``
    (f) cold start in a fresh interpreter that runs a thread: pool creation to the first
        result, first and second pool of the process (shutdown reported apart)

Runners: the sequential loop, ``mc.map``, ``mc.Pool``, ``multiprocessing.Pool``,
``concurrent.futures.ProcessPoolExecutor``, joblib (loky), mpire and pebble ((f) adds
ProcessPoolExecutor with the forkserver start method); a peer that is
not installed is skipped with a note.

It lives in the package so that ``manycore bench`` runs it from an installed
manycore; ``benchmarks/run.py`` in the repository runs the same suite with its work
functions in the script's ``__main__``, as a user's script has them. Modules:
``work`` (the work functions), ``runners`` (one class per way to run them),
``measure`` (timing each workload), ``suite`` (sizes, which workloads), ``report``
and ``targets`` (the markdown), ``plot`` (the bar chart).
"""
