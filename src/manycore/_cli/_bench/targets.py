"""The targets section: what the design promises, checked against this run's ratios."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from manycore._cli._bench.measure import IMPORTABLE, RAW_PIPE, Row, Workload
from manycore._cli._bench.runners import (
    MANYCORE_REF,
    FuturesForkserver,
    ManycoreMap,
    ManycorePool,
    MultiprocessingPool,
    Sequential,
)
from manycore._cli._bench.tables import efficiency, fmt_ratio, fmt_time, markdown_table

MANYCORE_ROWS = (ManycoreMap.name, ManycorePool.name, IMPORTABLE)


@dataclass
class Target:
    label: str
    runner: str
    rule: str
    passed: bool | None  # None: reported only, or not measured
    detail: str


def speed_targets(w: Workload, workers: int) -> list[Target]:
    """(a) no slower than the loop and 2x faster than multiprocessing.Pool; (b)/(c) efficiency."""
    targets = []
    for name in (ManycoreMap.name, ManycorePool.name):
        if w.key == "a":
            targets.append(_tiny_tasks_target(w, name))
        else:
            targets.append(_efficiency_target(w, name, workers))
    return targets


def _tiny_tasks_target(w: Workload, name: str) -> Target:
    t, seq, mp_t = w.get(name), w.get(Sequential.name), w.get(MultiprocessingPool.name)
    rule = "≤ sequential and ≥ 2x faster than multiprocessing.Pool"
    if t is None or seq is None or mp_t is None:
        return Target(w.key, name, rule, None, "not measured")
    detail = (
        f"{fmt_time(t)} = {fmt_ratio(t, seq)} sequential ({fmt_time(seq)}); "
        f"multiprocessing.Pool {fmt_time(mp_t)} is {fmt_ratio(mp_t, t)} manycore"
    )
    return Target(w.key, name, rule, t <= seq and mp_t / t >= 2, detail)


def _efficiency_target(w: Workload, name: str, workers: int) -> Target:
    t, seq = w.get(name), w.get(Sequential.name)
    need = 0.95 if w.key == "b" else 0.97
    eff = efficiency(seq, t, workers)
    rule = f"parallel efficiency ≥ {need:.0%} (time ≤ sequential / ({need} x {workers}))"
    if eff is None or t is None or seq is None:
        return Target(w.key, name, rule, None, "not measured")
    detail = (
        f"{fmt_time(t)} vs sequential {fmt_time(seq)}: efficiency {eff:.1%}; "
        f"limit {fmt_time(seq / (need * workers))}"
    )
    return Target(w.key, name, rule, eff >= need, detail)


def latency_target(w: Workload, name: str) -> Target:
    row = w.row(name)
    t = row.median if row else None
    raw = row.extra[1] if row and t is not None else None
    rule = "submit round trip ≤ 1.5 x raw Pipe"
    if t is None or raw is None:
        return Target("e", name, rule, None, "not measured")
    detail = f"{fmt_time(t)} vs raw Pipe {fmt_time(raw)} (just before) = {fmt_ratio(t, raw)}"
    return Target("e", name, rule, t <= 1.5 * raw, detail)


def _second(row: Row) -> float | None:
    return statistics.median(row.second) if row.second and not row.note else None


def cold_targets(w: Workload) -> list[Target]:
    """(f): the first and the second pool of a process, each within 1.5x of the
    fastest peer's (whatever its start method); the detail also names the standard
    library's safe start method's figure (``fork``, the peers' Linux default before
    Python 3.14, is unsafe in a parent that runs threads)."""
    return [
        _cold_target(w, "first pool", lambda r: r.median),
        _cold_target(w, "second pool", _second),
    ]


def _cold_target(w: Workload, which: str, figure: Callable[[Row], float | None]) -> Target:
    rule = f"{which}, construction to first result ≤ 1.5 x the fastest peer's"
    mine = w.row(ManycorePool.name)
    t = figure(mine) if mine else None
    peers = [
        (r.name, f) for r in w.rows if r.name not in MANYCORE_ROWS and (f := figure(r)) is not None
    ]
    if t is None or not peers:
        return Target("f", ManycorePool.name, rule, None, "not measured")
    name, best = min(peers, key=lambda peer: peer[1])
    detail = f"{fmt_time(t)} vs fastest peer {name} {fmt_time(best)} = {fmt_ratio(t, best)}"
    safe_row = w.row(FuturesForkserver.name)
    safe = figure(safe_row) if safe_row else None
    if safe is not None and name != FuturesForkserver.name:
        detail += (
            f"; vs {FuturesForkserver.name} (thread-safe start method) "
            f"{fmt_time(safe)} = {fmt_ratio(t, safe)}"
        )
    return Target("f", ManycorePool.name, rule, t <= 1.5 * best, detail)


def other_targets(w: Workload) -> list[Target]:
    if w.key == "e":
        return [latency_target(w, name) for name in (ManycorePool.name, IMPORTABLE)]
    if w.key == "f":
        return cold_targets(w)
    t, seq = w.get(MANYCORE_REF), w.get(Sequential.name)
    peers = [
        r
        for r in w.rows
        if r.median is not None and r.name not in (Sequential.name, MANYCORE_REF, ManycorePool.name)
    ]
    best = min(peers, key=lambda r: r.median or 0.0, default=None)
    if not (t and seq and best and best.median):
        return [
            Target(
                "d",
                MANYCORE_REF,
                "≤ 3x sequential, ≥ 20x faster than the best peer",
                None,
                "not measured",
            )
        ]
    passed = t <= 3 * seq and best.median >= 20 * t
    detail = (
        f"mc.map {fmt_time(t)} = {fmt_ratio(t, seq)} sequential; best peer {best.name} "
        f"{fmt_time(best.median)} is {best.median / t:.1f}x mc.map"
    )
    rule = "≤ 3x sequential and ≥ 20x faster than the best peer"
    return [Target("d", MANYCORE_REF, rule, passed, detail)]


RANKED = "abcdefgh"


def rank_row(w: Workload) -> list[str] | None:
    """manycore's best row against the fastest peer: first, tied (its median inside the
    peer's min-max range of repeats: the difference is noise), or behind."""
    timed = [r for r in w.rows if r.median is not None and r.name != Sequential.name]
    ours = [r for r in timed if r.name in MANYCORE_ROWS]
    peers = [r for r in timed if r.name not in MANYCORE_ROWS and r.name != RAW_PIPE]
    if not ours or not peers:
        return None
    mine = min(ours, key=lambda r: r.median or 0.0)
    best = min(peers, key=lambda r: r.median or 0.0)
    m, b = mine.median or 0.0, best.median or 0.0
    if m <= b:
        verdict = "**first**"
    elif len(best.times) > 1 and min(best.times) <= m <= max(best.times):
        verdict = "**tied** (within the peer's spread)"
    else:
        verdict = "behind"
    return [f"({w.key})", mine.name, fmt_time(m), best.name, fmt_time(b), fmt_ratio(m, b), verdict]


def ranking_section(workloads: dict[str, Workload]) -> list[str]:
    rows = [row for key in RANKED if key in workloads and (row := rank_row(workloads[key]))]
    header = ["workload", "manycore's best", "median", "fastest peer", "median"]
    header += ["x fastest peer", "verdict"]
    return [
        "## Ranking",
        "",
        "manycore's fastest row against the fastest peer's, in this run ((f): the first "
        "pool of a fresh process).",
        "",
        *markdown_table(header, rows),
        "",
    ]


def targets_section(workloads: dict[str, Workload], workers: int) -> list[str]:
    targets: list[Target] = []
    for key in "abcdef":
        if key in workloads:
            w = workloads[key]
            targets += speed_targets(w, workers) if key in "abc" else other_targets(w)
    verdict = {True: "**PASS**", False: "**FAIL**", None: "reported"}
    rows = [
        [
            f"({t.label})",
            t.runner,
            t.rule,
            verdict[t.passed if "not measured" not in t.detail else None],
            t.detail,
        ]
        for t in targets
    ]
    return [
        "## Targets",
        "",
        "Ratios from this run only.",
        "",
        *markdown_table(["workload", "runner", "target", "result", "measured"], rows),
    ]
