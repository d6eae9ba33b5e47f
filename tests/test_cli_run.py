"""``manycore run`` and ``manycore bench``: a handful of real commands as subprocesses,
the rest (argument errors, output details) in this process through ``main(argv)``
on the serial and threads backends, which start no process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from manycore._cli._main import main
from manycore._cli._run import load_function, map_takes_checkpoint

TESTS = Path(__file__).resolve().parent


def manycore(
    *args: str, stdin: str | None = None, cwd: Path = TESTS, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m manycore ARGS``, run from ``cwd`` (tests/: ``clifns`` is importable)."""
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "manycore", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full,
        timeout=60,
    )


def one_error(stderr: str) -> str:
    """The one error line of ``stderr`` (argparse also prints its usage above it)."""
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def jsonl(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit status, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() in this process puts folders first on sys.path, as the command does.
    monkeypatch.setattr(sys, "path", list(sys.path))


# ------------------------------------------------------------- as subprocesses


def test_arguments_in_json_lines_out() -> None:
    proc = manycore("run", "clifns:square", "--json", "1", "2", "--workers", "2", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n4\n9\n"
    assert proc.stderr == ""


def test_stdin_lines_are_strings_empty_lines_skipped() -> None:
    proc = manycore("run", "clifns:shout", stdin="a\n\nb c\r\n")
    assert proc.returncode == 0, proc.stderr
    assert jsonl(proc.stdout) == ["A!", "B C!"]


def test_json_lines_spread_with_star_on_threads() -> None:
    proc = manycore(
        "run", "clifns:add", "--json", "--star", "-", "--backend", "threads", stdin="[1, 2]\n[3, 4]"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "3\n7\n"


def test_file_module_input_file_and_output_file(tmp_path: Path) -> None:
    # A .py path as MODULE, from a folder that is not on sys.path: the workers import it.
    (tmp_path / "mytasks.py").write_text("def double(x):\n    return {'x': x, 'twice': 2 * x}\n")
    (tmp_path / "in.jsonl").write_text("1\n\n2.5\n")
    out = tmp_path / "out.jsonl"
    proc = manycore(
        "run", "mytasks.py:double", "--json", "-i", "in.jsonl", "-o", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert jsonl(out.read_text()) == [{"x": 1, "twice": 2}, {"x": 2.5, "twice": 5.0}]


def test_collect_writes_error_objects_in_place() -> None:
    stdin = "1\n2\n\n3\n[4\n5\n"
    proc = manycore("run", "clifns:fails_on", "--json", "--on-error", "collect", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert jsonl(proc.stdout) == [
        1,
        2,
        {"index": 2, "line": 4, "input": 3, "error": "ValueError: no 3"},
        {
            "index": 3,
            "line": 5,
            "input": "[4",
            "error": "InputError: line 5: not valid JSON: Expecting ',' delimiter (column 3)",
        },
        5,
    ]
    assert proc.stderr == "manycore run: 2 items failed (written as error objects)\n"


def test_a_failing_item_stops_the_run_with_exit_1() -> None:
    proc = manycore("run", "clifns:fails_on", "--json", "1", "2", "3", "4")
    assert proc.returncode == 1
    assert proc.stdout == "1\n2\n"  # the results before it
    assert proc.stderr == "manycore run: error: item 2 failed: ValueError: no 3\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nosuchmodule:f",), "no module named 'nosuchmodule'"),
        (("clifns:nope",), "clifns has no attribute 'nope'"),
        (("--workers", "0", "clifns:square"), "must be a whole number of at least 1, got 0"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    proc = manycore("run", *args, "1")
    assert proc.returncode == 2
    assert proc.stdout == ""
    error = one_error(proc.stderr)
    assert error.startswith("manycore run: error: ") and message in error, proc.stderr


def test_help_of_run_and_bench() -> None:
    for command, words in [
        ("run", ("MODULE:FUNCTION", "--on-error", "examples:", "exit status:")),
        ("bench", ("--quick", "--plot", "examples:")),
    ]:
        proc = manycore(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert all(word in proc.stdout for word in words), proc.stdout


def test_ctrl_c_exits_130_at_once() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "manycore", "run", "clifns:nap", "0", "30", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == '"0"\n'  # running: the other two sleep
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130
    assert err == "manycore run: interrupted\n"


def test_output_closed_early_exits_quietly() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "manycore", "run", "clifns:nap", "0", "0.01", "0.02", "0.03"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=TESTS,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head -0` would
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=30) == 141
    assert err == b""


@pytest.mark.timeout(60)
def test_bench_writes_the_table(tmp_path: Path) -> None:
    table, chart = tmp_path / "bench.md", tmp_path / "bench.png"
    proc = manycore(
        "bench", "--quick", "--only", "f", "--repeat", "1", "--output", str(table), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    text = table.read_text()
    assert text.startswith("# manycore benchmarks\n")
    assert "- Command: `manycore bench --quick --only f --repeat 1 --output " in text
    assert "## (f) cold start: pool creation to first result, in a fresh process" in text
    assert "| runner | first pool: to first result (median) | min - max | second pool" in text
    assert "| manycore Pool | " in text
    assert text in proc.stdout  # the report is printed too
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "the plot needs matplotlib: pip install matplotlib" in proc.stderr
        assert not chart.exists()
    else:
        assert chart.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not map_takes_checkpoint(), reason="mc.map has no checkpoint= yet")
def test_checkpoint_rerun_skips_finished_items(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    args = ["run", "clifns:logged", "--json", "1", "2", "3", "--checkpoint", str(tmp_path / "ck")]
    first = manycore(*args, "--backend", "threads", env={"CLIFNS_LOG": str(log)})
    assert first.returncode == 1 and "ValueError: no 3 until fixed" in first.stderr
    assert sorted(log.read_text().split()) == ["1", "2"]
    fixed = {"CLIFNS_LOG": str(log), "CLIFNS_FIXED": "1"}
    second = manycore(*args, "--backend", "threads", env=fixed)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "1\n2\n3\n"
    assert sorted(log.read_text().split()) == ["1", "2", "3"]  # 1 and 2 not run again
    again = manycore(*args, "--backend", "threads", "--resume", "no", env=fixed)
    assert again.returncode == 0 and again.stdout == "1\n2\n3\n", again.stderr
    assert sorted(log.read_text().split()) == ["1", "1", "2", "2", "3", "3"]


# ------------------------------------------------------------- in this process


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["clifns:square", "--star", "[1]"], "--star spreads JSON arrays: add --json"),
        (["clifns:square", "1", "-i", "x.txt"], "as arguments or with --input, not both"),
        (["clifns:square", "1", "-"], "'-' (read stdin) must be the only INPUT"),
        (["clifns:square", "--resume", "no", "1"], "--resume goes with --checkpoint FILE"),
        (["clifns:square", "--json", "1", "{x"], "item 1 '{x': not valid JSON: Expecting"),
        (["clifns:add", "--json", "--star", "[1, 2]", "3"], "item 1 '3': --star needs a JSON"),
        (["clifns:square", "--backend", "nope", "1"], "backend='nope' is not a known backend"),
        (["clifns:async_double", "--backend", "threads", "1"], "fn is an async function"),
        (["clifns:square", "-i", "/no/such/file"], "cannot read /no/such/file: No such file"),
        (["clifns:square", "-o", "/no/such/dir/out", "1"], "cannot write /no/such/dir/out"),
        (["clifns:square", "-i", "a.txt", "-o", "./a.txt"], "would overwrite the --input file"),
        (["square", "1"], "expected MODULE:FUNCTION (e.g. mytasks:process), got 'square'"),
        (["clifns:", "1"], "expected MODULE:FUNCTION"),
        (["clifns:Scaler.nope", "1"], "clifns.Scaler has no attribute 'nope'"),
        (["clifns:NOT_A_FUNCTION", "1"], "clifns:NOT_A_FUNCTION is not callable (it is int)"),
        (["no/such/file.py:f", "1"], "no such file: no/such/file.py"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["run", *argv], capsys)
    assert code == 2 and out == ""
    assert err.startswith("manycore run: error: ") and err.count("\n") == 1, err
    assert message in err, err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--timeout", "0"], "argument --timeout: must be a number of seconds above 0, got '0'"),
        (["--timeout", "soon"], "must be a number of seconds above 0, got 'soon'"),
        (["--retries", "-1"], "argument --retries: must be a whole number of at least 0"),
        (["--workers", "two"], "argument --workers: must be a whole number of at least 1"),
        (["--on-error", "ignore"], "argument --on-error: invalid choice: 'ignore'"),
        (["--resume", "maybe"], "argument --resume: invalid choice: 'maybe'"),
        (["--colour"], "unrecognized arguments: --colour"),
    ],
)
def test_bad_options_exit_2(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["run", "clifns:square", *option, "1"], capsys)
    assert code == 2 and out == ""
    assert message in one_error(err)


def test_no_function_at_all_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["run"], capsys)
    assert code == 2 and "MODULE:FUNCTION" in one_error(err)


@pytest.mark.skipif(map_takes_checkpoint(), reason="mc.map takes checkpoint= here")
def test_checkpoint_needs_a_manycore_that_has_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["run", "clifns:square", "--checkpoint", "ck", "1"], capsys)
    assert code == 2
    assert "--checkpoint needs manycore.map(checkpoint=...)" in one_error(err)


def test_checkpoint_keeps_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(
        ["run", "clifns:square", "--checkpoint", "ck", "--unordered", "1"], capsys
    )
    assert code == 2 and "--checkpoint keeps the input order" in one_error(err)


def test_import_errors_name_the_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken_syntax.py").write_text("def f(:\n")
    (tmp_path / "raises_on_import.py").write_text("x = 1\nraise RuntimeError('no config')\n")
    code, _, err = run_main(["run", f"{tmp_path}/broken_syntax.py:f", "1"], capsys)
    assert code == 2 and "importing" in err and "SyntaxError" in err
    assert "broken_syntax.py, line 1)" in err and err.count("\n") == 1
    code, _, err = run_main(["run", f"{tmp_path}/raises_on_import.py:f", "1"], capsys)
    assert code == 2
    assert "failed: RuntimeError: no config (" in err and "raises_on_import.py, line 2)" in err


def test_module_is_found_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwdtasks.py").write_text("class K:\n    def m(x):\n        return x + 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwdtasks", raising=False)
    fn = load_function("cwdtasks:K.m")
    assert fn(1) == 2 and sys.path[0] == str(tmp_path)
    sys.modules.pop("cwdtasks", None)


def test_a_file_shadowed_by_a_loaded_module_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "json.py").write_text("def f(x):\n    return x\n")
    code, _, err = run_main(["run", str(tmp_path / "json.py") + ":f", "1"], capsys)
    assert code == 2 and "would be imported as module 'json'" in err and "rename" in err


def test_results_json_cannot_hold_become_repr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(
        ["run", "clifns:odd_result", "--backend", "serial", "set", "1+2j"], capsys
    )
    assert code == 0
    assert jsonl(out) == ["{1, 2}", "(1+2j)"]


def test_numpy_results_become_lists(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("numpy")
    code, out, _ = run_main(["run", "numpy:arange", "--json", "--backend", "serial", "3"], capsys)
    assert code == 0 and jsonl(out) == [[0, 1, 2]]


def test_skip_drops_failures_and_counts_them(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "clifns:fails_on", "--json", "--on-error", "skip", "--backend", "threads"]
    code, out, err = run_main([*argv, "3", "1", "3"], capsys)
    assert code == 0 and out == "1\n"
    assert err == "manycore run: 2 items failed (skipped)\n"


def test_stdin_json_details(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Blank lines skipped (the line numbers still count them), a line that is not
    # UTF-8 or not an array under --star fails its own item, an object stays a dict.
    data = b'[1, 2]\n  \n\xff\n{"a": 1}\r\n["x", "y"]\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run_main(
        ["run", "clifns:add", "--json", "--star", "--on-error", "collect", "--backend", "serial"],
        capsys,
    )
    assert code == 0, err
    first, bad_utf8, bad_star, last = jsonl(out)
    assert first == 3 and last == "xy"
    assert bad_utf8["line"] == 3 and bad_utf8["index"] == 1
    assert bad_utf8["error"].startswith("InputError: line 3: not UTF-8 text")
    assert bad_star == {
        "index": 2,
        "line": 4,
        "input": '{"a": 1}',
        "error": "InputError: line 4: --star needs a JSON array, got an object",
    }


def test_failure_on_a_line_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"1\n\n\n3\n4\n")))
    code, out, err = run_main(["run", "clifns:fails_on", "--json", "--backend", "serial"], capsys)
    assert code == 1 and out == "1\n"
    assert err == "manycore run: error: item 1 (line 4) failed: ValueError: no 3\n"


def test_objects_stay_one_argument_and_strings_stay_strings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["run", "clifns:describe", "--backend", "serial"]
    code, out, _ = run_main([*argv, "--json", '{"a": [1]}', "7", '"7"', "null"], capsys)
    assert code == 0
    assert jsonl(out) == ["dict {'a': [1]}", "int 7", "str '7'", "NoneType None"]
    code, out, _ = run_main([*argv, "7", "-5"], capsys)
    assert jsonl(out) == ["str '7'", "str '-5'"]


def test_async_function_with_star_on_asyncio(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "clifns:async_double", "--backend", "asyncio", "--json", "--star"]
    code, out, err = run_main([*argv, "[1]", "[2]"], capsys)
    assert code == 0, err
    assert out == "2\n4\n"


def test_unordered_and_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "clifns:nap", "--json", "--backend", "threads", "--workers", "2"]
    code, out, _ = run_main([*argv, "--unordered", "0.3", "0"], capsys)
    assert code == 0 and out == "0\n0.3\n"
    code, out, _ = run_main([*argv, "--timeout", "0.1", "--on-error", "collect", "1"], capsys)
    assert code == 0
    (record,) = jsonl(out)
    assert record["index"] == 0 and record["error"].startswith("TaskTimeout")


def test_checkpoint_options_reach_map(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The wiring, checked now against a stand-in for the coming mc.map(checkpoint=...).
    import manycore as mc

    calls: list[dict[str, Any]] = []

    def fake_map(
        fn: Any,
        items: Any,
        *,
        checkpoint: Any = None,
        resume: bool | str = True,
        **options: Any,
    ) -> list[Any]:
        calls.append({"checkpoint": checkpoint, "resume": resume, **options})
        return [fn(x) for x in items]

    monkeypatch.setattr(mc, "map", fake_map)
    argv = ["run", "clifns:square", "--json", "--checkpoint", "ck.json", "--backend", "serial"]
    code, out, _ = run_main([*argv, "--resume", "force", "2", "3"], capsys)
    assert code == 0 and out == "4\n9\n"
    assert calls[0]["checkpoint"] == "ck.json" and calls[0]["resume"] == "force"
    assert calls[0]["on_error"] == "raise" and calls[0]["backend"] == "serial"
    assert "ordered" not in calls[0]  # map keeps the input order
    code, _, _ = run_main([*argv, "--resume", "no", "2"], capsys)
    assert code == 0 and calls[1]["resume"] is False
    code, _, _ = run_main([*argv, "2"], capsys)
    assert code == 0 and calls[2]["resume"] is True  # mc's default, not passed

    def refuses(fn: Any, items: Any, *, checkpoint: Any = None, **options: Any) -> list[Any]:
        raise ValueError(f"checkpoint {checkpoint} was written for other inputs")

    monkeypatch.setattr(mc, "map", refuses)
    code, out, err = run_main([*argv, "2"], capsys)
    assert code == 2 and out == ""
    assert err == "manycore run: error: checkpoint ck.json was written for other inputs\n"
