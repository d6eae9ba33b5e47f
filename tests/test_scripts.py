"""Functions from __main__: lambdas, closures and classes in a script with no guard."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import manycore as mc

SCRIPT = textwrap.dedent(
    """
    import manycore as mc
    from dataclasses import dataclass

    @dataclass
    class Point:
        x: int

    def double(p):
        return Point(p.x * 2)

    def make_adder(k):
        return lambda v: v + k

    def load_model():
        global MODEL
        MODEL = {{"bias": 100}}

    def predict(v):
        return v + MODEL["bias"] + OFFSET

    # No `if __name__ == "__main__":` guard on purpose.
    OFFSET = 1
    with mc.Pool(2, start_method={method!r}, init=load_model) as pool:
        # A global set by init is seen by the task; the parent's globals travel too.
        assert pool.map(predict, [1, 2]) == [102, 103]
        OFFSET = 2  # changed between calls, as in a notebook
        assert pool.map(predict, [1, 2]) == [103, 104]
    with mc.Pool(2, start_method={method!r}) as pool:
        assert pool.map(double, [Point(1), Point(2)]) == [Point(2), Point(4)]
        assert pool.map(make_adder(10), range(3)) == [10, 11, 12]
        assert pool.submit(lambda: "lambda ok").result(timeout=30) == "lambda ok"
    print(mc.map(lambda v: v * 3, [1, 2], start_method={method!r}))
    """
)


@pytest.mark.parametrize("method", mc.START_METHODS)
def test_script_without_main_guard(tmp_path: Path, method: str) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT.format(method=method))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[3, 6]"


def test_stdin_script_like_a_notebook(tmp_path: Path) -> None:
    # Code with no file at all (python -, a REPL, a notebook cell).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    code = "import manycore as mc\nf = lambda v: v + 1\nprint(mc.map(f, range(3)))\n"
    proc = subprocess.run(
        [sys.executable, "-"], input=code, capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[1, 2, 3]"


TRACEBACK_SCRIPT = textwrap.dedent(
    """
    import manycore as mc

    TABLE = bytes(2 << 20)  # a large global: it travels beside the function

    def check(x):
        if x == 3:
            raise ValueError(f"bad input {{x}} of {{len(TABLE)}}")
        return x

    if __name__ == "__main__":
        with mc.Pool(2, start_method={method!r}) as pool:
            out = pool.map(check, range(5), on_error="collect")
            print(out[3].traceback)
            pool.map(check, [3])
    """
)


@pytest.mark.parametrize("method", [m for m in ("spawn", "forkserver") if m in mc.START_METHODS])
def test_a_scripts_traceback_shows_its_source_line(tmp_path: Path, method: str) -> None:
    # Run by a relative name from its folder, as `python script.py` is.
    (tmp_path / "tb_script.py").write_text(TRACEBACK_SCRIPT.format(method=method))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "tb_script.py"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    for text in (proc.stdout, proc.stderr):
        assert 'tb_script.py", line 8, in check' in text, text
        assert 'raise ValueError(f"bad input {x} of {len(TABLE)}")' in text, text
        assert "<dynamic-code>" not in text
