"""The benchmark suite's command line (``manycore._bench``): its options, the run,
the report and the plot; ``benchmarks/run.py`` calls :func:`script_main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._bench.work import ALL_WORKLOADS, Work

__all__ = ["add_arguments", "run_suite", "script_main", "write_report"]


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
    write it (and the chart); ``work``: a :class:`manycore._bench.work.Work`, by
    default the package's own functions. Returns the exit status."""
    import manycore as mc

    from ._bench import plot as charts
    from ._bench.report import load_average, render
    from ._bench.suite import QUICK, Sizes, run_workloads
    from ._bench.work import PACKAGE_WORK, calibrate_spin

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
    from ._cli import whole_number

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
