"""joblib's own test_parallel.py, and a scikit-learn check, on the "manycore" backend.

    python tests/conformance/joblib_suite.py [-k EXPR] [--no-sklearn]

Part 1 runs pytest on the test_parallel.py that the installed joblib ships (nothing
is copied here), with joblib_plugin.py pointing it at backend="manycore" (see
that file for which cases run and why the rest are left out). Part 2 runs
GridSearchCV over a small RandomForestClassifier on load_digits with n_jobs=2 on
loky and on manycore, and checks both give the same search results. Each part
skips with a message where joblib's tests or scikit-learn are not installed.
Prints the counts and every skip with its reason; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def find_test_parallel() -> Path | None:
    spec = importlib.util.find_spec("joblib")
    if spec is None or spec.origin is None:
        print("joblib_suite: SKIPPED test_parallel.py: joblib is not installed")
        return None
    path = Path(spec.origin).parent / "test" / "test_parallel.py"
    if not path.exists():
        print(f"joblib_suite: SKIPPED test_parallel.py: this joblib does not ship {path}")
        return None
    return path


def run_test_parallel(path: Path, pattern: str | None) -> int:
    """pytest on the installed file, with no project configuration (an empty ini
    in a scratch root), the plugin loaded, a per-test time limit where
    pytest-timeout is installed."""
    with tempfile.TemporaryDirectory() as root:
        ini = Path(root, "pytest.ini")
        ini.write_text("[pytest]\n")
        cmd = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", root]
        cmd += ["-p", "joblib_plugin", "-p", "no:cacheprovider", "-q", "-rfE", str(path)]
        if importlib.util.find_spec("pytest_timeout") is not None:
            cmd += ["--timeout", "120"]
        if pattern:
            cmd += ["-k", pattern]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(_paths()))
        return subprocess.run(cmd, env=env, cwd=root).returncode


def _paths() -> list[str]:
    extra = [str(SRC), str(HERE)]
    return [*extra, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]


def sklearn_check() -> int:
    """GridSearchCV(n_jobs=2) on loky and on manycore: the same results."""
    if importlib.util.find_spec("sklearn") is None:
        print("joblib_suite: SKIPPED scikit-learn check: scikit-learn is not installed")
        return 0
    sys.path[:0] = [str(SRC)]
    import joblib
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV

    import manycore.joblib  # noqa: F401

    X, y = load_digits(return_X_y=True)
    grid = {"max_depth": [4, 8], "n_estimators": [10, 20]}

    def search(backend: str) -> tuple[Any, float]:
        began = time.perf_counter()
        with joblib.parallel_config(backend=backend):
            est = RandomForestClassifier(random_state=0)
            found = GridSearchCV(est, grid, cv=3, n_jobs=2).fit(X, y)
        return found, time.perf_counter() - began

    loky, loky_s = search("loky")
    ours, ours_s = search("manycore")
    same = loky.best_params_ == ours.best_params_ and np.array_equal(
        loky.cv_results_["mean_test_score"], ours.cv_results_["mean_test_score"]
    )
    same = same and np.array_equal(loky.predict(X), ours.predict(X))
    print(
        f"joblib_suite: scikit-learn GridSearchCV(RandomForestClassifier) on load_digits, "
        f"n_jobs=2: loky {loky_s:.1f} s, manycore {ours_s:.1f} s, best {ours.best_params_} "
        f"score {ours.best_score_:.4f}: {'same results: passed' if same else 'DIFFERENT: failed'}"
    )
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="pattern", help="pytest -k expression for test_parallel.py")
    parser.add_argument("--no-sklearn", action="store_true", help="leave out the sklearn check")
    args = parser.parse_args(argv)
    path = find_test_parallel()
    failed = 0 if path is None else run_test_parallel(path, args.pattern)
    if not args.no_sklearn:
        failed |= sklearn_check()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
