"""``manycore bench``: the benchmark suite (``manycore._cli._bench``), its table and a plot.

``benchmarks/run.py`` in the repository runs the same suite through
:func:`script_main`, with its own defaults (the same options, from
:func:`add_arguments`, and the same :func:`run_suite`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from manycore._cli._bench.work import ALL_WORKLOADS, Work

__all__ = ["add_arguments", "add_parser", "main", "run_suite", "write_report"]

PROG = "manycore bench"
DEFAULT_OUTPUT = Path("manycore-bench.md")

DESCRIPTION = """\
Run manycore's benchmark suite: six workloads on a plain loop, on manycore
(mc.map and mc.Pool) and on its peers (multiprocessing.Pool,
ProcessPoolExecutor, joblib, mpire), with the same workers, in one run; a peer
that is not installed is skipped with a note. Prints a markdown report, writes
it to --output, and draws a bar chart of each runner's time relative to a
reference (the sequential loop for (a)-(d)).

  (a) 1,000,000 x x*x                 (b) 2,000 x ~1 ms of pure-Python work
  (c) 4 x ~0.5 s of pure-Python work  (d) 64 NumPy arrays of 8 MB -> a.sum()
  (e) one submit(f, x).result() round trip, against a raw multiprocessing.Pipe
  (f) cold start: pool creation to the first result, first and second pool of a
      fresh interpreter that runs a thread"""

EPILOG = """\
examples:
  manycore bench                     full run (minutes): manycore-bench.md, .png
  manycore bench --quick --only a,e  smoke run (seconds), stdout only
  manycore bench --only b,c --workers 4 --output b.md --plot b.svg

The peers: pip install joblib mpire; the plot: pip install matplotlib
(without matplotlib the table is still written, with a note)."""


def add_arguments(
    parser: argparse.ArgumentParser,
    whole_number: Callable[[int], Callable[[str], int]],
    output_help: str,
    plot_help: str,
) -> None:
    """The suite's options (``manycore bench`` and ``benchmarks/run.py`` share them)."""
    parser.add_argument(
        "--workers",
        type=whole_number(1),
        metavar="N",
        help="workers for every parallel runner (default: usable CPUs)",
    )
    parser.add_argument(
        "--repeat",
        type=whole_number(1),
        metavar="N",
        help="repeats of each timed workload (default: 3 for (b) and (c), 5 else)",
    )
    parser.add_argument(
        "--only",
        type=_workload_letters,
        default=ALL_WORKLOADS,
        metavar="a,b,...",
        help="comma-separated workloads to run, e.g. a,e (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes for a smoke run; writes no file unless --output (or --plot)",
    )
    parser.add_argument("--output", type=Path, metavar="PATH", help=output_help)
    parser.add_argument("--plot", type=Path, metavar="PATH", help=plot_help)


def _workload_letters(text: str) -> str:
    """argparse type for ``--only``: "a,e" (or "ae") -> "ae"."""
    letters = "".join(sorted({k.strip() for k in text.split(",") if k.strip()}))
    if not letters or set(letters) - set(ALL_WORKLOADS):
        raise argparse.ArgumentTypeError(
            f"takes letters from {','.join(ALL_WORKLOADS)}, got {text!r}"
        )
    return letters


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    whole_number: Callable[[int], Callable[[str], int]],
) -> None:
    """The ``bench`` subcommand's arguments (``_cli`` wires it in)."""
    bench = commands.add_parser(
        "bench",
        help="run the benchmark suite against peers; a markdown table and a plot",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(
        bench,
        whole_number,
        output_help=f"markdown report (default: {DEFAULT_OUTPUT} here; none with --quick)",
        plot_help="bar chart, .png/.svg/.pdf (default: next to the report, as .png)",
    )
    bench.add_argument("--no-plot", action="store_true", help="draw no chart")


def main(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``manycore bench`` (``argv``: its command line, for the report): the exit status."""
    try:
        return run_suite(
            args,
            work=None,
            command=f"Command: `manycore {shlex.join(argv)}`",
            default_output=DEFAULT_OUTPUT,
            plot_by_default=not args.no_plot,
            prog=PROG,
        )
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def run_suite(
    args: argparse.Namespace,
    *,
    work: Work | None,
    command: str,
    default_output: Path | None,
    plot_by_default: bool,
    prog: str,
) -> int:
    """Run the suite as ``args`` say (see :func:`add_arguments`), print the report and
    write it (and the chart); ``work``: a :class:`manycore._cli._bench.work.Work`, by
    default the package's own functions. Returns the exit status."""
    import manycore as mc
    from manycore._cli._bench import plot as charts
    from manycore._cli._bench.report import load_average, render
    from manycore._cli._bench.suite import QUICK, Sizes, run_workloads
    from manycore._cli._bench.work import PACKAGE_WORK, calibrate_spin

    chosen = work or PACKAGE_WORK
    output = args.output or (None if args.quick else default_output)
    chart = args.plot or (output.with_suffix(".png") if output and plot_by_default else None)
    for path in (output, chart):
        if path is not None and not path.resolve().parent.is_dir():
            print(f"{prog}: error: cannot write {path}: no such directory", file=sys.stderr)
            return 2
    workers = args.workers or mc.usable_cpus()
    load = load_average()
    loops_per_ms = calibrate_spin(0.001, chosen.spin)
    print(f"calibrated: {loops_per_ms:,} loops of spin() per ms", file=sys.stderr)
    sizes = QUICK if args.quick else Sizes()
    workloads = run_workloads(args.only, sizes, workers, args.repeat, loops_per_ms, chosen)
    report = render(
        workloads,
        command=command,
        origin=chosen.origin,
        workers=workers,
        loops_per_ms=loops_per_ms,
        load=load,
    )
    print(report)
    if output is not None:
        write_report(output, report)
        print(f"written to {output}", file=sys.stderr)
    if chart is not None:
        if not charts.can_plot():
            print(f"{prog}: {charts.PLOT_HINT} (the table is written)", file=sys.stderr)
        elif charts.write_plot(workloads, chart):
            print(f"plot written to {chart}", file=sys.stderr)
    return 0


def write_report(path: Path, report: str) -> None:
    """Write ``report`` to ``path``, keeping sections other scripts wrote there
    (``benchmarks/soak.py``'s "## Soak")."""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        kept = old.find("\n## Soak")
        if kept >= 0:
            report = report.rstrip("\n") + "\n" + old[kept:]
    path.write_text(report, encoding="utf-8")


def script_main(
    argv: Sequence[str] | None,
    *,
    work: Work,
    description: str,
    default_output: Path,
    command: str,
) -> int:
    """``benchmarks/run.py``: the suite's options with the script's defaults (the
    report goes to ``default_output`` unless ``--quick``; a chart only with --plot)."""
    from manycore._cli._main import whole_number

    parser = argparse.ArgumentParser(description=description)
    add_arguments(
        parser,
        whole_number,
        output_help=f"markdown report path (default: {default_output.name} here)",
        plot_help="also draw a bar chart there (.png/.svg/.pdf; needs matplotlib)",
    )
    args = parser.parse_args(argv)
    return run_suite(
        args,
        work=work,
        command=command,
        default_output=default_output,
        plot_by_default=False,
        prog=parser.prog,
    )
