"""The report as a bar chart: each runner's time as a ratio, one panel per workload.

Needs matplotlib (``pip install matplotlib``); drawn on a bare ``Figure``, so
no GUI backend and no global pyplot state are involved.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from manycore._cli._bench.measure import RAW_PIPE, Workload
from manycore._cli._bench.runners import ManycorePool, Sequential

__all__ = ["PLOT_HINT", "can_plot", "ratios", "write_plot"]

PLOT_HINT = "the plot needs matplotlib: pip install matplotlib"


def can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def ratios(workloads: dict[str, Workload]) -> list[tuple[str, str, list[tuple[str, float]]]]:
    """Per workload with figures: its title, what the ratios are taken against, and
    each measured runner's (name, time / reference), as in the report's tables:
    (a)-(d) against the sequential loop, (e) against the raw Pipe round trips measured
    just before the runner's, (f) against manycore's Pool."""
    panels = []
    for key, w in workloads.items():
        bars: list[tuple[str, float]] = []
        reference = w.get(ManycorePool.name if key == "f" else Sequential.name)
        against = "manycore Pool" if key == "f" else "sequential loop"
        if key == "e":
            against = RAW_PIPE
        for row in w.rows:
            median = row.median
            base = row.extra[1] if key == "e" and median is not None else reference
            if median is not None and base:
                bars.append((row.name, median / base))
        if bars:
            panels.append((f"({key}) {w.title.replace('`', '')}", against, bars))
    return panels


def write_plot(workloads: dict[str, Workload], path: Path) -> bool:
    """Draw the chart into ``path`` (its suffix picks the format: .png, .svg, .pdf);
    False if there was nothing to draw."""
    # matplotlib is optional (and may be untyped here): imported by name.
    Figure = importlib.import_module("matplotlib.figure").Figure
    panels = ratios(workloads)
    if not panels:
        return False
    heights = [len(bars) + 1.5 for _, _, bars in panels]
    fig = Figure(figsize=(9, 0.32 * sum(heights) + 0.4), layout="constrained")
    grid = {"height_ratios": heights}  # (subplots(height_ratios=) needs matplotlib 3.6)
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw=grid)[:, 0]
    for ax, (title, against, bars) in zip(axes, panels, strict=True):
        names = [name for name, _ in bars]
        values = [value for _, value in bars]
        colours = ["tab:orange" if name.startswith("manycore") else "tab:grey" for name in names]
        ax.barh(names, values, color=colours)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(1, color="black", linewidth=0.8)
        ax.set_xlim(min(min(values), 1) / 1.6, max(max(values), 1) * 3)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:.2f}x", va="center", fontsize=7)
        ax.set_title(title, loc="left", fontsize=9)
        ax.set_xlabel(f"time / {against} (log scale; lower is faster)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("manycore benchmarks: time relative to a reference", fontsize=10)
    fig.savefig(path, dpi=120)
    return True
