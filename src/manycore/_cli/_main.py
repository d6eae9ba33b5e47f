"""The ``manycore`` command (also ``python -m manycore``).

``manycore run`` maps a function of yours over inputs (``_clirun``); ``manycore
bench`` runs the benchmark suite (``_clibench``); ``manycore demo`` times the
classic parallel-processing workloads sequentially and with ``manycore.map`` and
prints what parallelism gains on this machine; ``manycore info`` says what this
machine gives manycore. This module only wires the commands' parsers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of at least {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of at least {minimum}, got {value}"
            )
        return value

    return parse


_workers = whole_number(1)  # ``--workers``


def seconds(text: str) -> float:
    """argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from manycore import __version__

    parser = argparse.ArgumentParser(
        prog="manycore",
        description="manycore: run Python functions on every core, fast, without hangs.",
        epilog="Run 'manycore COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"manycore {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from manycore._cli import _bench_cmd as _clibench
    from manycore._cli import _celery_worker as _cliceleryworker
    from manycore._cli import _run as _clirun

    _clirun.add_parser(commands, whole_number, seconds)
    _clibench.add_parser(commands, whole_number)
    _cliceleryworker.add_parser(commands)
    demo = commands.add_parser(
        "demo",
        help="time classic workloads sequentially and with manycore.map",
        description=(
            "Run four classic workloads (sum of squares, factorials, counting primes, "
            "simulated downloads) first as a plain loop, then with manycore.map on a warm "
            "pool, check that the results agree, and print time, speedup, parallel "
            "efficiency and a verdict per workload. Takes about 15 seconds."
        ),
    )
    demo.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="worker processes (default: the CPUs this process may use); "
        "the threads backend gets N + 4, at most 32",
    )
    demo.add_argument(
        "--quick", action="store_true", help="smaller sizes: a few seconds (for tests)"
    )
    info = commands.add_parser(
        "info",
        help="what this machine gives manycore: CPUs, start methods, BLAS, backends",
        description=(
            "Print the CPUs this process may use (and why: affinity, cgroup quota), the "
            "start methods, the BLAS/OpenMP libraries NumPy loads and their threads, "
            "whether this Python is a free-threading build, and which backends are ready."
        ),
    )
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    # argparse offers no public way back to a subparser it made.
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return action.choices[name]  # type: ignore[no-any-return]
    raise LookupError(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``manycore`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["run"]:
        # Options may come between the inputs (manycore run f 1 2 --json 3): argparse
        # parses those intermixed only on a parser without subcommands.
        run = _subparser(parser, "run")
        args = run.parse_intermixed_args(argv[1:], argparse.Namespace(command="run"))
    else:
        args = parser.parse_args(argv)
    if args.command == "run":
        from manycore._cli._run import main as run_main

        return run_main(args)
    if args.command == "bench":
        from manycore._cli._bench_cmd import main as bench_main

        return bench_main(args, argv)
    if args.command == "celery-worker":
        from manycore._cli._celery_worker import main as celery_worker_main

        return celery_worker_main(args)
    if args.command == "info":
        from manycore._cli._info import main as info_main

        return info_main(args.json)
    if args.command == "demo":
        from manycore._cli._demo import DemoError, run_demo

        try:
            run_demo(workers=args.workers, quick=args.quick)
        except DemoError as exc:
            print(f"manycore demo: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("manycore demo: interrupted", file=sys.stderr)
            return 130
    return 0
