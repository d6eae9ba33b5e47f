"""``mc.graph``: the dependency graph behind task futures, as DOT, SVG or PNG.

The SVG is drawn here (tasks in layers: each one row below its lowest input),
so a picture needs nothing installed; DOT text is for Graphviz, which also
makes PNG and PDF when its ``dot`` program is on the PATH.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from manycore._core import public
from manycore._tasks._nodes import TaskFuture, TaskNode, TaskState

__all__ = ["TaskGraph", "graph"]

# What each state looks like (fill colour), also in the DOT output.
COLOURS = {
    "pending": "#e6e6e6",
    "running": "#ffd966",
    "done": "#9fd89f",
    "failed": "#f19a9a",
    "cancelled": "#c8c8c8",
}
_BOX_H, _ROW, _GAP, _MARGIN, _CHAR_W = 38, 80, 16, 20, 7.2
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _shown(node: TaskNode) -> str:
    state = node.state
    if state in (TaskState.WAITING, TaskState.READY):
        return "pending"
    if state is TaskState.SUBMITTED:
        probe = node.probe
        return "running" if probe is not None and probe() else "pending"
    shown: str = state.value
    return shown


@dataclass(frozen=True)
class GraphNode:
    key: int
    name: str
    state: str  # pending, running, done, failed or cancelled
    error: str | None


@public
class TaskGraph:
    """A snapshot of task calls and which fed which. ``nodes``: by key;
    ``edges``: (input key, task key) pairs."""

    def __init__(self, nodes: dict[int, GraphNode], edges: list[tuple[int, int]]):
        self.nodes = nodes
        self.edges = edges

    def __repr__(self) -> str:
        return f"<TaskGraph {len(self.nodes)} tasks, {len(self.edges)} edges>"

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state."""
        out: dict[str, int] = {}
        for node in self.nodes.values():
            out[node.state] = out.get(node.state, 0) + 1
        return out

    # ----------------------------------------------------------------- DOT

    def dot(self) -> str:
        """The graph in Graphviz's DOT language."""
        lines = [
            "digraph tasks {",
            "  rankdir=TB;",
            '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        ]
        for node in self.nodes.values():
            label = f"{_dot_text(node.name)} #{node.key}\\n{node.state}"
            tip = f', tooltip="{_dot_text(node.error)}"' if node.error else ""
            colour = COLOURS[node.state]
            lines.append(f'  t{node.key} [label="{label}", fillcolor="{colour}"{tip}];')
        lines.extend(f"  t{a} -> t{b};" for a, b in self.edges)
        lines.append("}")
        return "\n".join(lines) + "\n"

    # ----------------------------------------------------------------- SVG

    def svg(self) -> str:
        """The graph drawn as SVG, inputs above the tasks that use them."""
        places = self._layout()
        width = max((x + w for x, _, w in places.values()), default=0) + _MARGIN
        height = max((y + _BOX_H for _, y, _ in places.values()), default=0) + _MARGIN
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
            "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' "
            "markerWidth='7' markerHeight='7' orient='auto'>"
            "<path d='M0,0 L10,5 L0,10 z' fill='#555'/></marker></defs>",
        ]
        for a, b in self.edges:
            (xa, ya, wa), (xb, yb, wb) = places[a], places[b]
            x1, y1, x2, y2 = xa + wa / 2, ya + _BOX_H, xb + wb / 2, yb
            mid = (y1 + y2) / 2
            out.append(
                f'<path class="edge" data-from="{a}" data-to="{b}" '
                f'd="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}" '
                'fill="none" stroke="#555" marker-end="url(#arrow)"/>'
            )
        for key, (x, y, w) in places.items():
            node = self.nodes[key]
            dash = ' stroke-dasharray="4,3"' if node.state == "cancelled" else ""
            title = _xml(node.error or node.state)
            out.append(
                f'<g class="task {node.state}" data-key="{key}"><title>{title}</title>'
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_BOX_H}" rx="6" '
                f'fill="{COLOURS[node.state]}" stroke="#444"{dash}/>'
                f'<text x="{x + w / 2:.1f}" y="{y + 16}" text-anchor="middle">'
                f"{_xml(node.name)} #{key}</text>"
                f'<text x="{x + w / 2:.1f}" y="{y + 30}" text-anchor="middle" fill="#333" '
                f'font-size="10">{node.state}</text></g>'
            )
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def _repr_svg_(self) -> str:  # Jupyter shows the picture
        return self.svg()

    def _layout(self) -> dict[int, tuple[float, int, float]]:
        """(x, y, width) of each box: a task sits one row below its deepest input."""
        inputs: dict[int, list[int]] = {key: [] for key in self.nodes}
        for a, b in self.edges:
            inputs[b].append(a)
        row: dict[int, int] = {}
        for key in sorted(self.nodes):  # inputs have smaller keys: made first
            row[key] = 1 + max((row[a] for a in inputs[key] if a in row), default=-1)
        places: dict[int, tuple[float, int, float]] = {}
        x_at: dict[int, float] = {}
        for key in sorted(self.nodes):
            r = row[key]
            width = max(90.0, _CHAR_W * (len(self.nodes[key].name) + len(str(key)) + 3))
            x = x_at.get(r, float(_MARGIN))
            places[key] = (x, _MARGIN + r * _ROW, width)
            x_at[r] = x + width + _GAP
        return places

    # ---------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str], format: str | None = None) -> str:
        """Write the graph to ``path``: ``svg`` (drawn here), ``dot``/``gv`` (text),
        or ``png``/``pdf`` (by Graphviz's ``dot`` program). The format comes from
        the file name unless given. Returns the path."""
        path = os.fspath(path)
        fmt = (format or os.path.splitext(path)[1].lstrip(".") or "svg").lower()
        if fmt == "svg":
            text = self.svg()
        elif fmt in ("dot", "gv"):
            text = self.dot()
        elif fmt in ("png", "pdf"):
            _graphviz(self.dot(), fmt, path)
            return path
        else:
            raise ValueError(f"format must be 'svg', 'dot', 'png' or 'pdf', got {fmt!r}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path


def _dot_text(text: str) -> str:
    """``text`` inside a DOT string: backslashes and quotes escaped, line
    breaks as DOT's ``\\n``, other control characters dropped."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return _CONTROL.sub("", text)


def _xml(text: str) -> str:
    """``text`` escaped for SVG (XML allows no control characters but tab and
    line breaks, even escaped)."""
    return html.escape(_CONTROL.sub("\ufffd", text))


def _graphviz(source: str, fmt: str, path: str) -> None:
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError(
            f"a {fmt.upper()} picture needs Graphviz's 'dot' program, which is not on "
            "the PATH: install Graphviz, or save as .svg (drawn without it)"
        )
    done = subprocess.run(
        [program, f"-T{fmt}", "-o", path], input=source.encode(), capture_output=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"Graphviz failed: {done.stderr.decode(errors='replace').strip()}")


@public
def graph(
    futures: Future[Any] | Iterable[Future[Any]],
    path: str | os.PathLike[str] | None = None,
    *,
    format: str | None = None,
) -> TaskGraph:
    """The graph of task calls behind ``futures`` (one task future or several):
    every task they needed, with its state (pending, running, done, failed or
    cancelled). With ``path``, also saved there (see :meth:`TaskGraph.save`)."""
    roots = [futures] if isinstance(futures, Future) else list(_check(futures))
    nodes: dict[int, GraphNode] = {}
    edges: list[tuple[int, int]] = []
    for node in nodes_behind(roots):
        nodes[node.key] = GraphNode(node.key, node.name, _shown(node), node.error)
        edges.extend((dep.key, node.key) for dep in node.deps)
    result = TaskGraph(dict(sorted(nodes.items())), sorted(set(edges)))
    if path is not None:
        result.save(path, format)
    return result


def nodes_behind(futures: Iterable[Future[Any]]) -> list[TaskNode]:
    """The task calls of ``futures`` and every call they need, each once."""
    seen: dict[int, TaskNode] = {}
    stack = [f.node for f in futures if isinstance(f, TaskFuture)]
    while stack:
        node = stack.pop()
        if node.key not in seen:
            seen[node.key] = node
            stack.extend(node.deps)
    return list(seen.values())


def _check(futures: Iterable[Future[Any]]) -> list[Future[Any]]:
    try:
        items = list(futures)
    except TypeError:
        kind = type(futures).__name__
        raise TypeError(f"graph() takes a task future or futures, got {kind}") from None
    for f in items:
        if not isinstance(f, Future):
            raise TypeError(f"graph() takes task futures, got an item of type {type(f).__name__}")
    return items
