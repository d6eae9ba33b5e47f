"""The tables of the report, and how times and ratios are written."""

from __future__ import annotations

import statistics

from manycore._cli._bench.measure import IMPORTABLE, RAW_PIPE, Workload
from manycore._cli._bench.runners import MANYCORE_REF, RUNNERS, ManycorePool, Sequential


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_cpu(seconds: float | None) -> str:
    return "-" if seconds is None else fmt_time(seconds)


def fmt_ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if value is not None and reference else "-"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def efficiency(sequential: float | None, parallel: float | None, workers: int) -> float | None:
    """Parallel efficiency: sequential time / (workers x parallel time)."""
    return sequential / (workers * parallel) if sequential and parallel else None


def map_table(w: Workload, workers: int, with_efficiency: bool) -> list[str]:
    seq, ref = w.get(Sequential.name), w.get(MANYCORE_REF)
    seq_row = w.row(Sequential.name)
    seq_cpu = seq_row.cpu_median if seq_row else None
    header = ["runner", "median", "min - max", "x sequential", "x mc.map"]
    header += ["parallel efficiency"] if with_efficiency else []
    header += ["CPU of the tree (median)", "CPU x sequential"]
    rows = []
    for r in w.rows:
        if r.median is None:
            rows.append([r.name, r.note] + ["-"] * (len(header) - 2))
            continue
        cells = [
            r.name,
            fmt_time(r.median),
            f"{fmt_time(min(r.times))} - {fmt_time(max(r.times))}",
            fmt_ratio(r.median, seq),
            fmt_ratio(r.median, ref),
        ]
        if with_efficiency:
            eff = efficiency(seq, r.median, workers) if r.name != Sequential.name else None
            cells.append(f"{eff:.1%}" if eff is not None else "-")
        cells += [fmt_cpu(r.cpu_median), fmt_ratio(r.cpu_median, seq_cpu)]
        rows.append(cells)
    return markdown_table(header, rows)


def latency_table(w: Workload) -> list[str]:
    ref = w.get(ManycorePool.name)
    how = {cls.name: cls.call_label for cls in RUNNERS}
    how[RAW_PIPE] = "`conn.send(x); conn.recv()`, a child echoing (all runs pooled)"
    how[IMPORTABLE] = "`pool.submit(operator.pos, x).result()`"
    header = [
        "runner",
        "one round trip",
        "median",
        "p90",
        "raw Pipe just before",
        "x raw Pipe",
        "x manycore Pool",
        "CPU of the tree per trip",
        "CPU x raw Pipe",
    ]
    raw_row = w.row(RAW_PIPE)
    raw_cpu = raw_row.cpu_median if raw_row else None
    rows = []
    for r in w.rows:
        if r.median is None:
            rows.append([r.name, how.get(r.name, ""), r.note] + ["-"] * 6)
            continue
        p90, raw = r.extra
        rows.append(
            [
                r.name,
                how.get(r.name, ""),
                fmt_time(r.median),
                fmt_time(p90),
                fmt_time(raw),
                fmt_ratio(r.median, raw),
                fmt_ratio(r.median, ref),
                fmt_cpu(r.cpu_median),
                fmt_ratio(r.cpu_median, raw_cpu),
            ]
        )
    return markdown_table(header, rows)


def cold_table(w: Workload) -> list[str]:
    """(f): the first pool of a fresh process (its spread, its shutdown, its CPU) and
    the second pool of the same process."""
    ref = w.get(ManycorePool.name)
    header = [
        "runner",
        "first pool: to first result (median)",
        "min - max",
        "second pool (median)",
        "shutdown of the first (median)",
        "first pool x manycore Pool",
        "CPU of the tree to the first result",
    ]
    rows = []
    for r in w.rows:
        if r.median is None:
            rows.append([r.name, r.note] + ["-"] * (len(header) - 2))
            continue
        rows.append(
            [
                r.name,
                fmt_time(r.median),
                f"{fmt_time(min(r.times))} - {fmt_time(max(r.times))}",
                fmt_time(statistics.median(r.second)) if r.second else "-",
                fmt_time(statistics.median(r.extra)) if r.extra else "-",
                fmt_ratio(r.median, ref),
                fmt_cpu(r.cpu_median),
            ]
        )
    return markdown_table(header, rows)
