""":class:`manycore.Profile`, what ``mc.profile`` returns: the figures, and how
they show: text (``print``), HTML (Jupyter) and a speedup-vs-workers chart
(matplotlib, the optional ``plot`` extra)."""

from __future__ import annotations

import html as _html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manycore._core import public
from manycore._observe._recommend import (
    Measurements,
    Recommendation,
    fmt_bytes,
    fmt_seconds,
    overhead,
)

__all__ = ["Profile", "ProfileRow", "html", "plot", "text"]

_HEADER = ("backend", "workers", "time", "speedup", "efficiency", "overhead/task", "start-up")


@dataclass(frozen=True)
class ProfileRow:
    """One line of the table: the sample run by ``workers`` workers of ``backend``."""

    backend: str
    workers: int
    seconds: float  # wall time of the whole sample (pool start-up not included)
    speedup: float  # sequential time / seconds
    efficiency: float  # speedup / workers
    overhead: float  # seconds lost per task against perfect scaling
    bytes_per_task: int  # pickled item + result (processes; 0 where nothing is pickled)
    startup: float  # seconds to start and warm the pool


@public
class Profile:
    """What :func:`manycore.profile` measured and what it recommends; ``print()`` it.

    ``items``: calls in the sample. ``seconds_per_item``, ``cpu_per_item``: one
    sequential call's wall time (less any wait for a CPU that other programs kept
    busy) and CPU time. ``waiting``: the fraction of a call spent off the CPU
    (sleep, I/O). ``holds_gil``: True if it computes and threads never
    ran it on two CPUs at once, False if it waits or runs in parallel on threads,
    None if not measured. ``bytes_per_task``: pickled size of an item and its
    result (None: they do not pickle). ``rows``: a :class:`ProfileRow` per
    (backend, workers), serial first. ``recommendation``: backend, workers,
    chunksize, reason. ``notes``: runs skipped, and why. ``elapsed``: seconds
    the profiling took. ``plot(path)`` saves a speedup-vs-workers chart.
    """

    def __init__(
        self,
        function: str,
        measured: Measurements,
        recommendation: Recommendation,
        notes: Sequence[str],
        elapsed: float,
        cpus: int,
        batch_seconds: float,
    ):
        self.function = function
        self.measured = measured
        self.recommendation = recommendation
        self.notes = list(notes)
        self.elapsed = elapsed
        self.cpus = cpus
        self.batch_seconds = batch_seconds  # what the planner aims at on that backend
        self.items = measured.items
        self.seconds_per_item = measured.per_call
        self.cpu_per_item = measured.cpu_per_call
        self.waiting = measured.waiting
        self.holds_gil = measured.holds_gil()
        self.bytes_per_task = measured.bytes_per_task
        self.rows = _rows(measured)

    def __str__(self) -> str:
        return text(self)

    def __repr__(self) -> str:
        rec = self.recommendation
        return (
            f"<manycore.Profile {self.function} items={self.items} "
            f"recommends backend={rec.backend!r} workers={rec.workers}>"
        )

    def _repr_html_(self) -> str:
        return html(self)

    def plot(self, path: str | Path) -> Path:
        """Save a speedup-vs-workers chart (one line per backend, the ideal
        diagonal) to ``path``, as PNG, SVG or PDF after its suffix. Needs
        matplotlib: ``pip install matplotlib``."""
        return plot(self, Path(path))


def _rows(m: Measurements) -> list[ProfileRow]:
    # The baseline first: the plain loop (for an async fn: awaiting each call in turn).
    rows = [ProfileRow(m.names.inline, 1, m.wall, 1.0, 1.0, 0.0, 0, 0.0)]
    for r in m.runs:
        speedup = m.speedup(r)
        moved = (m.bytes_per_task or 0) if r.backend == m.names.process else 0
        rows.append(
            ProfileRow(
                r.backend, r.workers, r.seconds, speedup, speedup / r.workers,
                overhead(m, r), moved, r.startup,
            )
        )  # fmt: skip
    return rows


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
        baseline = r.backend == p.measured.names.inline
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
    rec, names = p.recommendation, p.measured.names
    count = "concurrency" if rec.backend == names.coroutine else "workers"
    lines = [f'recommended: backend="{rec.backend}", {count}={rec.workers}, chunksize=None']
    lines += textwrap.wrap("why: " + rec.reason, 88, subsequent_indent="  ")
    if rec.backend != names.inline and p.seconds_per_item > 0:
        per_batch = max(1, round(p.batch_seconds / p.seconds_per_item))
        lines += textwrap.wrap(
            f"chunksize=None: the adaptive planner sends batches of about "
            f"{fmt_seconds(p.batch_seconds)} of work "
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
        raise ImportError("Profile.plot needs matplotlib: pip install matplotlib") from exc
    # A Figure of its own with the Agg canvas, not pyplot: no global state is
    # touched and no window opens, whatever backend the caller's matplotlib uses.
    fig: Any = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = max(r.workers for r in p.rows)
    ax.plot([1, top], [1, top], linestyle="--", color="grey", label="ideal (speedup = workers)")
    ax.plot([1], [1], marker="s", color="black", linestyle="", label="plain loop")
    names = p.measured.names
    for backend in names.cheapest_first(list(dict.fromkeys(r.backend for r in p.rows))):
        rows = [r for r in p.rows if r.backend == backend]
        if backend != names.inline:
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
