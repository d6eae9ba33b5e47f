"""The markdown report: the machine and settings, a table per workload, the targets."""

from __future__ import annotations

import datetime
import importlib.metadata
import multiprocessing
import os
import platform
import subprocess
from contextlib import suppress
from pathlib import Path

import manycore as mc
from manycore._cli._bench.measure import Workload
from manycore._cli._bench.runners import COLD_ONLY, RUNNERS
from manycore._cli._bench.tables import cold_table, latency_table, map_table
from manycore._cli._bench.targets import ranking_section, targets_section


def versions() -> str:
    names = ["manycore", "cloudpickle", "numpy", "joblib", "mpire", "pebble", "psutil"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def source_revision() -> str:
    """The git commit of the manycore measured, and whether its source differs from it."""
    package = Path(mc.__file__).resolve().parent
    git = ["git", "-C", str(package)]
    try:
        # A package installed inside some other checkout (a venv in a repository) is untracked.
        subprocess.run(
            [*git, "ls-files", "--error-unmatch", "__init__.py"], capture_output=True, check=True
        )
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes in src/" if dirty else "")


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def header_section(command: str, workers: int, loops_per_ms: int, load: str) -> list[str]:
    """``command``: how the run was started, e.g. "Command: `manycore bench`"."""
    return [
        "# manycore benchmarks",
        "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- {command}",
        f"- Machine: {cpu_model()}; `os.cpu_count()` = {os.cpu_count()}, "
        f"`manycore.usable_cpus()` = {mc.usable_cpus()}; {platform.platform()}; "
        f"load average (1, 5, 15 min) at start: {load}, at end: {load_average()}",
        f"- manycore source: {source_revision()}",
        f"- Workers for every parallel runner: {workers}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); "
        f"multiprocessing default start method: `{multiprocessing.get_start_method()}`",
        f"- Packages: {versions()}",
        f"- Calibration: `spin(n)` runs {loops_per_ms:,} loops per ms on this machine "
        "(best of 5 probes, in the parent).",
        "- Times are medians of the repeats; `x sequential` and `x mc.map` are time ratios "
        "(lower is faster). Every result was checked against the sequential loop's.",
        "- CPU of the tree: the CPU seconds (user + system) this process and all its "
        "descendants spent in the timed region (median of the repeats; the CPU hog of (h) "
        "left out). It holds steady where wall time swings with the machine's load.",
        "",
    ]


def default_start() -> str:
    return multiprocessing.get_all_start_methods()[0]


def settings_section(origin: str) -> list[str]:
    """``origin``: where the work functions live (the script's ``__main__``, or not)."""
    lines = ["## Runner settings", ""]
    lines += [f"- **{cls.name}**: {cls.settings}" for cls in RUNNERS + COLD_ONLY]
    lines += [
        "- **raw multiprocessing.Pipe** (reference for (e)): a `multiprocessing.Process` "
        "(default start method) echoes what it receives on a `multiprocessing.Pipe()`.",
        "- (a)-(d): every runner's pool is built and warmed up (one small call of the same "
        "function on a slice of the input) outside the timed region, then the repeats go "
        "round-robin over the runners. (e): one runner at a time, warmed up first.",
        "- (f): each repeat is a fresh interpreter (`sys.executable`) that starts a thread "
        "which stays alive (a parent that runs threads), imports manycore, the bench's "
        "runners and the peer's package (outside the timing, for every runner alike), then "
        "times pool construction to the first result of `noop(7)` (run as in (e); `noop` "
        "is the child script's own `__main__` function), the shutdown apart, then a second "
        "pool of the same kind the same way; the repeats go round-robin over the runners. "
        f"The peers run with their default start method (here `{default_start()}`; `fork` "
        "is unsafe in a parent that runs threads), so (f) adds "
        "**ProcessPoolExecutor (forkserver)**, the standard library's safe one.",
        f"- The work functions (`square`, `noop`, `spin`, `array_sum`) come from {origin} "
        "(except (f)'s `noop`: see above).",
        "- (e) **manycore Pool, importable f**: the same Pool round trip with `operator.pos` "
        "instead of `noop` (manycore pickles a function from `__main__` by value on every "
        "submit; every other runner uses `noop`).",
        "",
    ]
    return lines


def render(
    workloads: dict[str, Workload],
    *,
    command: str,
    origin: str,
    workers: int,
    loops_per_ms: int,
    load: str,
) -> str:
    """The whole report, as markdown."""
    lines = header_section(command, workers, loops_per_ms, load) + settings_section(origin)
    for key, w in workloads.items():
        lines += [f"## ({key}) {w.title}", ""]
        if w.notes and not w.rows:  # skipped
            lines += [*w.notes, ""]
            continue
        if key in "abcdgh":
            lines += map_table(w, workers, with_efficiency=key in "bcgh")
        elif key == "e":
            lines += latency_table(w)
        else:
            lines += cold_table(w)
        lines += ["", *w.notes] if w.notes else []
        lines.append("")
    lines += ranking_section(workloads) + targets_section(workloads, workers)
    return "\n".join(lines) + "\n"
