"""How a :class:`manycore.Profile` shows itself: text (``print``), HTML (Jupyter)
and a speedup-vs-workers chart (matplotlib, the optional ``plot`` extra)."""

from __future__ import annotations

import html as _html
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._recommend import cheapest_first, fmt_bytes, fmt_seconds

if TYPE_CHECKING:
    from ._profile import Profile

__all__ = ["html", "plot", "text"]

_BATCH_SECONDS = 0.02  # what the adaptive planner aims at per batch (_scheduler)
_HEADER = ("backend", "workers", "time", "speedup", "efficiency", "overhead/task", "start-up")


def _summary(p: Profile) -> list[str]:
    gil = {True: "yes", False: "no", None: "not measured"}[p.holds_gil]
    moved = "does not pickle" if p.bytes_per_task is None else fmt_bytes(p.bytes_per_task)
    return [
        f"manycore.profile of {p.function}: {p.items} items, {p.cpus} usable CPUs "
        f"(profiling took {p.elapsed:.1f} s)",
        f"one call: {fmt_seconds(p.seconds_per_item)}, of which CPU "
        f"{fmt_seconds(p.cpu_per_item)} ({p.waiting:.0%} waiting); holds the GIL: {gil}",
        f"data moved per task (processes: item + result, pickled): {moved}",
    ]


def _cells(p: Profile) -> list[tuple[str, ...]]:
    cells: list[tuple[str, ...]] = []
    for r in p.rows:
        baseline = r.backend == "serial"
        cells.append(
            (
                r.backend,
                str(r.workers),
                fmt_seconds(r.seconds),
                f"{r.speedup:.2f}x",
                f"{r.efficiency:.0%}",
                "-" if baseline else fmt_seconds(r.overhead),
                "-" if baseline else fmt_seconds(r.startup),
            )
        )
    return cells


def _advice(p: Profile) -> list[str]:
    rec = p.recommendation
    count = "concurrency" if rec.backend == "asyncio" else "workers"
    lines = [f'recommended: backend="{rec.backend}", {count}={rec.workers}, chunksize=None']
    lines += textwrap.wrap("why: " + rec.reason, 88, subsequent_indent="  ")
    if rec.backend != "serial" and p.seconds_per_item > 0:
        per_batch = max(1, round(_BATCH_SECONDS / p.seconds_per_item))
        lines += textwrap.wrap(
            f"chunksize=None: the adaptive planner sends batches of about 20 ms of work "
            f"(~{per_batch} item{'s' if per_batch != 1 else ''} here); no fixed size is needed",
            88,
            subsequent_indent="  ",
        )
    for note in p.notes:
        lines += textwrap.wrap("note: " + note, 88, subsequent_indent="  ")
    return lines


def text(p: Profile) -> str:
    """The report ``print(profile)`` shows: summary, table, recommendation."""
    cells = [_HEADER, *_cells(p)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADER))]
    table = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    return "\n".join([*_summary(p), "", *table, "", *_advice(p)])


def html(p: Profile) -> str:
    """The same report as an HTML table, for Jupyter."""
    esc = _html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in _cells(p)
    )
    summary = "<br>".join(esc(line) for line in _summary(p))
    advice = "<br>".join(esc(line) for line in _advice(p))
    return (
        f"<div><p>{summary}</p><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table><p>{advice}</p></div>"
    )


def plot(p: Profile, path: Path) -> Path:
    """Speedup against workers, one line per backend, and the ideal diagonal."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise ImportError('Profile.plot needs matplotlib: pip install "manycore[plot]"') from exc
    # A Figure of its own with the Agg canvas, not pyplot: no global state is
    # touched and no window opens, whatever backend the caller's matplotlib uses.
    fig: Any = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = max(r.workers for r in p.rows)
    ax.plot([1, top], [1, top], linestyle="--", color="grey", label="ideal (speedup = workers)")
    ax.plot([1], [1], marker="s", color="black", linestyle="", label="plain loop")
    for backend in cheapest_first(list(dict.fromkeys(r.backend for r in p.rows))):
        rows = [r for r in p.rows if r.backend == backend]
        if backend != "serial":
            ax.plot([r.workers for r in rows], [r.speedup for r in rows], marker="o", label=backend)
    rec = p.recommendation
    chosen = [r for r in p.rows if (r.backend, r.workers) == (rec.backend, rec.workers)]
    if chosen:  # a ring around the recommended point
        ring = {"marker": "o", "markersize": 14, "markerfacecolor": "none", "linestyle": ""}
        ax.plot(chosen[0].workers, chosen[0].speedup, color="red", label="recommended", **ring)
    ax.set_title(f"{p.function}: {p.items} items; recommended {rec.backend} x{rec.workers}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("workers")
    ax.set_ylabel("speedup over a plain loop")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
