"""A pytest plugin (``-p joblib_plugin``) that points joblib's own test_parallel.py at
the ``"manycore"`` backend; tests/conformance/joblib_suite.py loads it.

* The backend is registered, and made joblib's default, before the test module is
  imported: its lists built from joblib's registry (``ALL_VALID_BACKENDS``,
  ``RETURN_GENERATOR_BACKENDS``, ``BACKENDS``) then hold "manycore" too.
* "manycore" joins the module's ``PROCESS_BACKENDS`` and ``PARALLEL_BACKENDS``
  before its tests are parametrized (pytest reads those lists at collection).
* Kept: every case with "manycore" among its parameters, and the tests with no
  backend parameter whose code names no other backend (they run on the default,
  manycore). Left out: cases of the other backends (joblib's own business).
* ``SKIPS``: the cases that are not backend-agnostic, each with its reason.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from joblib import parallel

import manycore.joblib  # noqa: F401  # registers the backend

parallel.register_parallel_backend("manycore", parallel.BACKENDS["manycore"], make_default=True)

OTHER_BACKENDS = re.compile(
    r"""["'](loky|threading|multiprocessing|sequential|spawn|back_compat_backend)["']"""
    r"|get_reusable_executor|LokyBackend|ThreadingBackend|MultiprocessingBackend"
)

# Cases run on manycore that test something only another backend does; the
# reason is printed with the skip. Keys: test name, optionally with "[...]" ids.
_REGISTRY = (
    "the outer call runs on {0}, whose workers never imported manycore.joblib: "
    "joblib's backend registry is per process, so the inner Parallel(backend="
    '"manycore") is an invalid name there, as for any backend registered at run '
    "time (a module that imports manycore.joblib registers it in those workers too)"
)
_PRIVATE_POOL = (
    "reads backend._pool/_workers and requires an abort to restart the pool: "
    "manycore's abort kills only the call's running batches and keeps its workers "
    "(the test's error checks run in tests/test_joblib_backend.py)"
)
_MEMMAP = (
    "checks joblib's memmapping of large arrays (np.memmap in the workers), which "
    "joblib's own process backends do; manycore sends arrays through its own "
    "shared memory, and the workers get ndarrays"
)
SKIPS: dict[str, str] = {
    "test_nested_loop[loky-manycore]": _REGISTRY.format("loky"),
    "test_nested_loop[back_compat_backend-manycore]": _REGISTRY.format(
        "the test's back_compat_backend (loky underneath)"
    ),
    "test_backend_nesting_level[parallel_config-manycore-loky]": _REGISTRY.format("loky"),
    "test_backend_nesting_level[parallel_backend-manycore-loky]": _REGISTRY.format("loky"),
    "test_parallel_with_interactively_defined_functions": (
        "runs a script in a child interpreter that imports only joblib and asks "
        'for backend="manycore" by name: the name is registered by importing '
        "manycore.joblib, which that script does not (lambdas and functions of "
        "__main__ on manycore are covered by test_lambda_expression and "
        "test_parallel_with_unpicklable_functions_in_args, run here)"
    ),
    "test_error_capture": _PRIVATE_POOL,
    "test_auto_memmap_on_arrays_from_generator": _MEMMAP,
    "test_memmapping_leaks": _MEMMAP,
}

KEPT: list[str] = []  # what ran on manycore, and why it was kept, for the report
LEFT_OUT: dict[str, int] = {"another backend's case": 0, "code names another backend": 0}


def _is_manycore(value: Any) -> bool:
    return value == "manycore" or type(value).__name__ == "ManycoreBackend"


def _backend_params(item: pytest.Item) -> list[Any]:
    spec = getattr(item, "callspec", None)
    if spec is None:
        return []
    return [v for k, v in spec.params.items() if "backend" in k]


@pytest.hookimpl(hookwrapper=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: Any) -> Any:
    module = getattr(collector, "obj", None)
    lists = [getattr(module, n, None) for n in ("PROCESS_BACKENDS", "PARALLEL_BACKENDS")]
    for backends in lists:
        if isinstance(backends, list) and "manycore" not in backends:
            backends.append("manycore")
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        params = _backend_params(item)
        if params:
            keep = any(_is_manycore(v) for v in params)
            why = "another backend's case"
        else:
            source = inspect.getsource(item.function)  # type: ignore[attr-defined]
            keep = not OTHER_BACKENDS.search(source)
            why = "code names another backend"
        if keep:
            kept.append(item)
            _skip_if_listed(item)
        else:
            dropped.append(item)
            LEFT_OUT[why] += 1
    items[:] = kept
    config.hook.pytest_deselected(items=dropped)


# Open defects of manycore's backend, not differences: listed so that each run
# shows them (xfail, not strict: a pass shows as xpassed), until they are fixed.
KNOWN_DEFECTS: dict[str, str] = {}  # none open


def _skip_if_listed(item: pytest.Item) -> None:
    name = item.name.partition("[")[0]
    if name in KNOWN_DEFECTS:
        item.add_marker(pytest.mark.xfail(reason=KNOWN_DEFECTS[name], strict=False))
    for key in (item.name, name):
        if key in SKIPS:
            item.add_marker(pytest.mark.skip(reason=f"not backend-agnostic: {SKIPS[key]}"))
            return


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The counts and every skip's reason (one line per test and reason)."""
    write = terminalreporter.write_line
    stats = terminalreporter.stats
    kinds = ("passed", "skipped", "failed", "error", "xfailed", "xpassed")
    counts = ", ".join(f"{len(stats.get(k, []))} {k}" for k in kinds)
    write(f"joblib_suite: joblib's test_parallel.py on backend='manycore': {counts}")
    left = ", ".join(f"{n} ({why})" for why, n in LEFT_OUT.items())
    write(f"joblib_suite: left out, not manycore's cases: {left}")
    reasons: dict[tuple[str, str], int] = {}
    for report in stats.get("skipped", []):
        name = report.nodeid.rpartition("::")[2]
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        key = (name.partition("[")[0] if "not backend-agnostic" not in why else name, why)
        reasons[key] = reasons.get(key, 0) + 1
    for (name, why), n in sorted(reasons.items()):
        write(f"  skipped {name} (x{n}): {why.removeprefix('Skipped: ')}")
