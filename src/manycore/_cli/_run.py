"""``manycore run MODULE:FUNCTION [INPUT ...]``: a function of yours over many inputs.

The inputs are the arguments, or the lines of ``--input FILE`` or of stdin, read as
the workers need them (a huge or endless input streams through ``manycore.imap``);
``--json`` parses each one as JSON. Each result is written as one JSON line, in
input order by default, as soon as it and those before it are ready.

Mistakes in the command line (an option, a function that cannot be imported, an
argument that is not JSON, a file that cannot be opened) print one line and exit
with status 2 before any work. A failed item under ``--on-error raise`` prints one
line naming it and exits with status 1, the results before it already written.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from manycore._cli._io import Inputs, JsonLines, UsageError, describe, open_inputs
from manycore._cli._target import AsyncCall, Call, load_function
from manycore.backends import DEFAULT_BACKEND

__all__ = ["add_parser", "load_function", "main", "map_takes_checkpoint"]

PROG = "manycore run"
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 130, 141
RESUME = {"yes": True, "force": "force", "no": False}

DESCRIPTION = """\
Call FUNCTION on each input in parallel (on worker processes by default) and
write each result as one line of JSON: in input order, as soon as it and those
before it are ready."""

EPILOG = """\
examples:
  manycore run mytasks:word_count *.txt       word_count('a.txt'), ... (strings)
  manycore run --json mytasks:slow_square 1 2 3     slow_square(1), ... (JSON)
  seq 100 | manycore run --json --progress mytasks:slow_square > out.jsonl
  manycore run --json --star mytasks:add '[1, 2]' '[3, 4]'  add(1, 2), add(3, 4)
  manycore run --json -i params.jsonl --on-error collect -o out.jsonl sim.py:run

inputs: the INPUT arguments, else the lines of --input FILE or of stdin (UTF-8,
  line break removed, empty lines skipped), read as the workers need them. With
  --json an INPUT argument that is not JSON is an error before any work; a line
  that is not JSON fails its own item (InputError), as a function that raised.

output: one JSON line per result; a NumPy value is written as its .tolist(),
  anything else JSON cannot hold as its repr() string. A failed item: with
  --on-error raise (the default) the run stops with one line naming it, after
  every result before it; skip drops it; collect writes {"index": I, "line": L,
  "input": ..., "error": "Type: message"} in its place (I counts from 0; "line"
  when the inputs are lines).

exit status: 0 done (also when skip or collect met failures: a note on stderr
  counts them), 1 an item failed (raise) or the run failed, 2 a mistake in the
  command line (nothing was run), 130 interrupted (Ctrl-C), 141 the output was
  closed early (| head)."""


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    whole_number: Callable[[int], Callable[[str], int]],
    seconds: Callable[[str], float],
) -> None:
    """The ``run`` subcommand's arguments (``_cli`` wires it in)."""
    run = commands.add_parser(
        "run",
        help="call a function of yours on many inputs in parallel; JSON lines out",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        help="the function: MODULE is a module importable from the current directory "
        "(as with python -m) or a path to a .py file; FUNCTION may be dotted (Class.method)",
    )
    run.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="the inputs, one per argument; none, or '-': read lines from stdin",
    )
    _add_input_options(run.add_argument_group("inputs"))
    _add_run_options(run.add_argument_group("running"), whole_number, seconds)
    output = run.add_argument_group("output")
    output.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")


def _add_input_options(source: argparse._ArgumentGroup) -> None:
    source.add_argument(
        "-i", "--input", metavar="FILE", help="read the inputs from FILE, one per line ('-': stdin)"
    )
    source.add_argument(
        "--json",
        "--jsonl",
        action="store_true",
        dest="json",
        help="parse each input as JSON (JSON lines): numbers, lists, objects...",
    )
    source.add_argument(
        "--star",
        action="store_true",
        help="call FUNCTION(*value): each input, a JSON array, gives the positional "
        "arguments (needs --json; an object stays one dict argument without --star)",
    )


def _add_run_options(
    running: argparse._ArgumentGroup,
    whole_number: Callable[[int], Callable[[str], int]],
    seconds: Callable[[str], float],
) -> None:
    running.add_argument(
        "--workers", type=whole_number(1), metavar="N", help="workers (default: usable CPUs)"
    )
    running.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        metavar="NAME",
        help="processes (default), threads, asyncio (FUNCTION is an async def), serial, "
        "dask or ray",
    )
    running.add_argument(
        "--timeout", type=seconds, metavar="SECONDS", help="an item running longer fails"
    )
    running.add_argument(
        "--retries",
        type=whole_number(0),
        default=0,
        metavar="N",
        help="run a failed item up to N more times (default 0)",
    )
    running.add_argument(
        "--on-error",
        choices=("raise", "skip", "collect"),
        default="raise",
        help="a failed item stops the run (raise, the default), is dropped (skip) or is "
        "written as an error object (collect)",
    )
    running.add_argument(
        "--unordered",
        action="store_true",
        help="write results as they finish, not in input order (failures keep their index)",
    )
    running.add_argument(
        "--progress", action="store_true", help="a progress bar on stderr (items, rate, ETA)"
    )
    running.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="record finished items in FILE; a rerun with the same inputs skips them",
    )
    running.add_argument(
        "--resume",
        choices=tuple(RESUME),
        help="with --checkpoint: manycore.map's resume=True (yes, the default), "
        "'force' or False (no: start over)",
    )


# ------------------------------------------------------------------------ the run


@dataclass
class Plan:
    """What to run, checked before any work: the call, its inputs and mc options."""

    fn: Callable[..., object]
    inputs: Inputs
    on_error: str
    # (keyword options of mc.imap / mc.map, passed through as they are)
    options: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None


def main(args: argparse.Namespace) -> int:
    """``manycore run``: the exit status."""
    out: IO[str] | None = None
    plan: Plan | None = None
    try:
        plan = _plan(args)
        results = _start(plan)  # mc checks its options here, before any output
        out = _open_output(args.output)
        with JsonLines(out) as lines:
            return _execute(plan, results, lines)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (| head): no traceback, and none at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # the pool could not start, ...: one line too
        _error(describe(exc))
        return EXIT_FAILED
    finally:
        if plan is not None:
            plan.inputs.close()
        if out is not None and out is not sys.stdout:
            out.close()


def _plan(args: argparse.Namespace) -> Plan:
    from manycore.backends import is_async_callable

    _check_combinations(args)
    checkpoint = _checkpoint_options(args)
    fn = load_function(args.target)
    inputs = open_inputs(args.inputs, args.input, args.json, args.star)
    if args.star or inputs.from_lines:  # a line may be a BadInput
        fn = (AsyncCall if is_async_callable(fn) else Call)(fn, args.star)
    options = {
        "workers": args.workers,
        "backend": args.backend,
        "timeout": args.timeout,
        "retries": args.retries,
        # skip is collect with the failures dropped here: they can then be counted.
        "on_error": "raise" if args.on_error == "raise" else "collect",
        "ordered": not args.unordered,
        "progress": args.progress,
    }
    return Plan(fn, inputs, args.on_error, options, checkpoint)


def _check_combinations(args: argparse.Namespace) -> None:
    if args.star and not args.json:
        raise UsageError("--star spreads JSON arrays: add --json")
    if args.input is not None and args.inputs:
        raise UsageError("give the inputs as arguments or with --input, not both")
    if "-" in args.inputs and len(args.inputs) > 1:
        raise UsageError("'-' (read stdin) must be the only INPUT")
    if args.resume is not None and args.checkpoint is None:
        raise UsageError("--resume goes with --checkpoint FILE")
    if args.checkpoint is not None and args.unordered:
        raise UsageError("--checkpoint keeps the input order: drop --unordered")
    if args.input not in (None, "-") and args.output not in (None, "-"):
        if Path(args.input).resolve() == Path(args.output).resolve():
            raise UsageError(f"--output {args.output} would overwrite the --input file")


def _checkpoint_options(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.checkpoint is None:
        return None
    import manycore as mc

    if not map_takes_checkpoint():
        raise UsageError(
            f"--checkpoint needs manycore.map(checkpoint=...), which manycore "
            f"{mc.__version__} does not have yet"
        )
    options: dict[str, Any] = {"checkpoint": args.checkpoint}
    if args.resume is not None:
        options["resume"] = RESUME[args.resume]
    return options


def map_takes_checkpoint() -> bool:
    """Whether this manycore's ``map`` has the ``checkpoint=`` keyword."""
    import manycore as mc

    return "checkpoint" in inspect.signature(mc.map).parameters


def _open_output(path: str | None) -> IO[str]:
    if path is None or path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _execute(plan: Plan, results: Iterator[object], out: JsonLines) -> int:
    """Write each result as it comes; the exit status."""
    from manycore._core import Failure

    failed = 0
    try:
        for result in results:
            if isinstance(result, Failure):
                failed += 1
                if plan.on_error == "collect":
                    out.write(plan.inputs.failure_record(result, describe(result.exception)))
            else:
                out.write(result)
    except (UsageError, BrokenPipeError):  # UsageError: mc refused an option
        raise
    except Exception as exc:
        out.flush()
        _error(_describe_failure(exc, plan.inputs))
        return EXIT_FAILED
    out.flush()
    if failed:
        what = "skipped" if plan.on_error == "skip" else "written as error objects"
        print(f"{PROG}: {failed} item{'s' * (failed != 1)} failed ({what})", file=sys.stderr)
    return 0


def _start(plan: Plan) -> Iterator[object]:
    """The results, as they come: mc.imap over the inputs, or with a checkpoint
    mc.map (run when first asked for a result). An option that mc refuses before
    any work is a usage error."""
    import manycore as mc

    if plan.checkpoint is not None:
        options = {k: v for k, v in plan.options.items() if k != "ordered"}
        items = plan.inputs.items()
        return _later(lambda: mc.map(plan.fn, items, **options, **plan.checkpoint or {}))
    try:
        return mc.imap(plan.fn, plan.inputs.items(), **plan.options)
    except (ValueError, TypeError, ImportError) as exc:
        raise UsageError(describe(exc, with_type=False)) from None


def _later(run: Callable[[], list[object]]) -> Iterator[object]:
    from manycore._core import CheckpointMismatch

    try:
        results = run()
    except CheckpointMismatch as exc:
        # Its advice names the Python keywords; say it in this command's words.
        text = describe(exc, with_type=False)
        text = text.replace('resume="force"', "--resume force").replace(
            "resume=False", "--resume no"
        )
        raise UsageError(text) from None
    except (ValueError, TypeError, ImportError) as exc:
        if item_index(exc) is None:  # refused before any work, not an item's error
            raise UsageError(describe(exc, with_type=False)) from None
        raise
    yield from results


_INDEX_NOTE = re.compile(r"input item (\d+)")


def item_index(exc: BaseException) -> int | None:
    """The index of the input whose item raised ``exc`` (manycore notes it)."""
    for note in getattr(exc, "__notes__", None) or ():
        found = _INDEX_NOTE.search(str(note))
        if found:
            return int(found.group(1))
    index = getattr(exc, "index", None)
    return index if isinstance(index, int) else None


def _describe_failure(exc: BaseException, inputs: Inputs) -> str:
    index = item_index(exc)
    if index is None:
        return describe(exc)
    line = inputs.line_of(index)
    where = f"item {index}" + (f" (line {line})" if line is not None else "")
    return f"{where} failed: {describe(exc)}"


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
