"""From measurements to a recommendation: which backend, how many workers, and why.

Pure logic, no I/O: :func:`decide` takes a :class:`Measurements` (what
``mc.profile`` or ``backend="auto"`` observed) and returns a
:class:`Recommendation` with the reason in plain words, so every rule here is
tested with made-up numbers, without processes or clocks.

Two kinds of input reach it. ``mc.profile`` ran the sample on each backend at
several worker counts: the choice is the measured best (the cheapest option within
``_CLOSE`` of it; serial, then threads, then processes, fewer workers first).
``backend="auto"`` ran only a few items inline: the choice is predicted from how
much of each call was CPU and how much waiting, with rough per-item costs of each
backend (:func:`_predict`); it must promise ``_MIN_GAIN`` over a plain loop to leave it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from manycore._observe._names import BackendNames

__all__ = ["Measurements", "Recommendation", "Run", "decide", "fmt_bytes", "fmt_seconds"]

_CLOSE = 1.10  # options within 10% of the best count as equally fast: take the cheapest
_MIN_GAIN = 1.25  # a predicted gain must be at least this to leave the plain loop
_WAITING = 2 / 3  # a call whose CPU time is below a third of its wall time mostly waits
_QUEUED_NOTE = 0.1  # a reason mentions the wait for a busy CPU past this share of the wall time
_FREE_CPUS = 1.4  # threads keeping this many CPUs busy at once: the function releases the GIL
# Rough costs for the prediction of backend="auto" (measured on a laptop and a
# 2-core VM; they only need to be right within a factor of ~2): per item on a
# pool (hand-off, result list), per pickled byte (both ways, pipe included), and
# starting the default process pool when it is not running yet.
_THREAD_COST = 1e-6
_PROCESS_COST = 2e-6
_BYTE_COST = 2e-9
_PROCESS_START = 0.2


@dataclass(frozen=True)
class Run:
    """One parallel run over the whole sample on a warm pool."""

    backend: str
    workers: int
    seconds: float  # wall time of the map (the pool was started and warmed before)
    cpu: float | None = None  # CPU time of the calls, summed (threads), if measured
    startup: float = 0.0  # seconds it took to start and warm the pool
    # (threads) seconds its threads waited for a CPU other programs kept busy, summed
    queued: float = 0.0

    def busy(self) -> float | None:
        """CPUs its calls kept busy at once on average (threads, where measured),
        not counting each thread's average wait for a CPU other programs held."""
        if self.cpu is None:
            return None
        elapsed = self.seconds - self.queued / self.workers
        return self.cpu / elapsed if elapsed > 0 else None


@dataclass(frozen=True)
class Measurements:
    """What was observed: the sample run sequentially, and any parallel runs."""

    items: int  # calls made sequentially
    wall: float  # their total wall time, seconds
    cpu: float  # their total CPU time, seconds
    runs: tuple[Run, ...] = ()  # mc.profile's runs; empty for backend="auto"
    bytes_per_task: int | None = 0  # pickled item + result; None: they do not pickle
    is_async: bool = False
    candidates: tuple[str, ...] | None = None  # None: the inline, thread and process ones
    predict: bool = False  # backend="auto": no parallel runs, predict from the sample
    remaining: int | None = None  # (auto) items still to run; None: unknown (lazy input)
    thread_workers: int = 1  # (auto) workers of the pools it would use
    process_workers: int = 1
    async_workers: int = 1  # (auto) coroutines at once
    processes_warm: bool = True  # (auto) the default process pool is running already
    # Of ``wall``: seconds the calls were ready to run but waited for a CPU that
    # other programs kept busy. Not the function's own waiting: on a loaded
    # machine pure-Python work would otherwise read as I/O and go to threads.
    queued: float = 0.0
    # (auto) CPUs kept busy at once by two items run on two threads (the overlap
    # probe, see _gil.threads_busy); None: not probed.
    threads_busy: float | None = None
    names: BackendNames = field(kw_only=True)

    @property
    def offered(self) -> tuple[str, ...]:
        """The backends the recommendation may pick from."""
        if self.candidates is not None:
            return self.candidates
        return (self.names.inline, self.names.thread, self.names.process)

    @property
    def own_wall(self) -> float:
        """The calls' wall time less their wait for a CPU: their time on a free machine."""
        return max(self.cpu, self.wall - self.queued)

    @property
    def per_call(self) -> float:
        return self.own_wall / self.items if self.items else 0.0

    @property
    def cpu_per_call(self) -> float:
        return self.cpu / self.items if self.items else 0.0

    @property
    def waiting(self) -> float:
        """Fraction of a call's wall time not spent on a CPU (sleep, I/O, locks),
        its wait for a busy CPU left out."""
        wall = self.own_wall
        return max(0.0, 1.0 - self.cpu / wall) if wall > 0 else 0.0

    def speedup(self, run: Run) -> float:
        return self.wall / run.seconds if run.seconds > 0 else float("inf")

    def holds_gil(self) -> bool | None:
        """True: it computes and threads never kept more than one CPU busy at once.
        False: it mostly waits, or threads did run it on several CPUs at once.
        None: unknown (no threaded run with several workers, or an async function)."""
        if self.is_async:
            return None
        if self.waiting >= _WAITING:
            return False  # waiting releases the GIL (sleep, I/O)
        if self.threads_busy is not None:
            return self.threads_busy < _FREE_CPUS
        threaded = [r for r in self.runs if r.backend == self.names.thread and r.workers > 1]
        busy = threaded[-1].busy() if threaded else None  # CPUs in use at once, on average
        return None if busy is None else busy < _FREE_CPUS


@dataclass(frozen=True)
class Recommendation:
    """What to run ``fn`` with: ``mc.map(fn, xs, backend=..., workers=...)``.

    ``workers`` is the coroutines at once (``concurrency``) for asyncio.
    ``chunksize`` None means: let the adaptive planner size the batches (it aims
    at ~20 ms of work per batch); ``reason`` says why, with the numbers.
    """

    backend: str
    workers: int
    chunksize: int | None
    reason: str


def decide(m: Measurements) -> Recommendation:
    """The recommendation for ``m``: measured (``m.runs``) or predicted (``m.predict``)."""
    if not m.predict:
        return _from_runs(m)
    if m.is_async:
        return Recommendation(
            m.names.coroutine,
            m.async_workers,
            None,
            f"fn is an async function (async def): up to {m.async_workers} calls run side "
            "by side on one event loop",
        )
    return _predict(m)


# ----------------------------------------------------------- measured (profile)


def _from_runs(m: Measurements) -> Recommendation:
    """The cheapest option within ``_CLOSE`` of the fastest measured one."""
    # Two gains that cannot be real, only noise on a busy machine, are never
    # picked while the loop is there to fall back on (they stay in the table):
    # one worker beating the loop (it does the loop's work plus hand-offs), and
    # threads beating it for a function that holds the GIL.
    names = m.names
    fallback = names.inline in m.offered
    gil = m.holds_gil()
    options: list[tuple[str, int, float]] = [(names.inline, 1, 1.0)] if fallback else []
    for r in m.runs:
        if fallback and (r.workers == 1 or (gil and r.backend == names.thread)):
            continue
        options.append((r.backend, r.workers, m.speedup(r)))
    if not options:  # nothing but runs that the budget or pickling ruled out
        fallback_backend = names.coroutine if m.is_async else m.offered[0]
        return Recommendation(
            fallback_backend, 1, None, "no parallel run could be measured (see the notes)"
        )
    best = max(s for _, _, s in options)
    options.sort(key=lambda o: (names.cost_rank(o[0]), o[1]))
    backend, workers, _ = next(o for o in options if o[2] * _CLOSE >= best)
    if backend == names.inline:
        return Recommendation(backend, 1, None, _serial_reason(m))
    run = next(r for r in m.runs if (r.backend, r.workers) == (backend, workers))
    if backend == names.coroutine:
        reason = _asyncio_reason(m, run)
    elif backend == names.thread:
        reason = _threads_reason(m, run)
    else:
        reason = _processes_reason(m, run)
    return Recommendation(backend, workers, None, reason)


def _usage(m: Measurements) -> str:
    usage = f"CPU {fmt_seconds(m.cpu_per_call)} of {fmt_seconds(m.per_call)} per call"
    if m.items and m.queued > _QUEUED_NOTE * m.wall:
        queued = fmt_seconds(m.queued / m.items)
        usage += f", plus {queued} waiting for a CPU other programs kept busy"
    return usage


def _best_of(m: Measurements, backend: str) -> float:
    """The best speedup measured on ``backend`` (0 if it was not run)."""
    return max((m.speedup(r) for r in m.runs if r.backend == backend), default=0.0)


def _serial_reason(m: Measurements) -> str:
    if not m.runs:
        return "only the plain loop was measured: there is nothing to compare it with"
    top = max(m.runs, key=m.speedup)
    at_best = f"{_who(m, top)} ran it {m.speedup(top):.2f}x"
    if m.per_call < 50e-6:
        return (
            f"each call takes only {fmt_seconds(m.per_call)}: handing items to workers "
            f"costs more than the work (at best {at_best} as fast as a loop); a plain loop "
            "is fastest"
        )
    why = ""
    if m.holds_gil() and not any(r.backend == m.names.process for r in m.runs):
        why = "; it holds the GIL, so threads cannot run it in parallel (try processes)"
    return f"nothing ran it clearly faster than a plain loop (at best {at_best}){why}"


def _who(m: Measurements, run: Run) -> str:
    """``run``'s workers in words: "1 thread", "4 processes", "16 coroutines"."""
    kind = m.names.kind(run.backend)
    word = kind if kind in ("thread", "process", "coroutine") else run.backend
    if run.workers != 1:
        word += "es" if word.endswith("s") else "s"
    return f"{run.workers} {word}"


def _more_may_help(m: Measurements, run: Run) -> str:
    """A note when the best count was also the largest tried and still scaled well."""
    largest = max(r.workers for r in m.runs if r.backend == run.backend)
    if run.workers == largest and run.workers > 1 and m.speedup(run) / run.workers >= 0.75:
        return f"; more {run.backend} may help further (try workers={2 * run.workers})"
    return ""


def _threads_reason(m: Measurements, run: Run) -> str:
    speedup = m.speedup(run)
    if m.waiting >= _WAITING:
        return (
            f"the function spends {m.waiting:.0%} of its time waiting ({_usage(m)}): "
            f"threads overlap the waiting without pickling; {_who(m, run)} ran it "
            f"{speedup:.1f}x faster than a loop{_more_may_help(m, run)}"
        )
    procs = _best_of(m, m.names.process)
    versus = f", as fast as processes ({procs:.1f}x)" if procs else ""
    if m.holds_gil() is False:
        busy = run.busy() or 0.0
        return (
            f"the function computes ({_usage(m)}) but releases the GIL ({_who(m, run)} kept "
            f"{busy:.1f} CPUs busy): threads ran it {speedup:.1f}x faster without "
            f"pickling{versus}"
        )
    return f"{_who(m, run)} ran it {speedup:.1f}x faster than a loop, without pickling{versus}"


def _processes_reason(m: Measurements, run: Run) -> str:
    speedup = m.speedup(run)
    costs = (
        f"{speedup / run.workers:.0%} efficiency, {fmt_seconds(overhead(m, run))} overhead "
        f"and {fmt_bytes(m.bytes_per_task or 0)} moved per task"
    )
    threads = _best_of(m, m.names.thread)
    if m.holds_gil():
        lead = (
            f"the function computes ({_usage(m)}) and holds the GIL, so threads cannot "
            f"run it in parallel (at best {threads:.1f}x); "
        )
    elif m.waiting >= _WAITING:
        lead = f"the function mostly waits ({_usage(m)}), yet "
    else:
        lead = f"the function computes ({_usage(m)}); "
    return f"{lead}{_who(m, run)} ran it {speedup:.1f}x faster than a loop ({costs})"


def _asyncio_reason(m: Measurements, run: Run) -> str:
    return (
        f"fn is an async function that waits ({_usage(m)}): {run.workers} coroutines at "
        f"once ran it {m.speedup(run):.1f}x faster than awaiting each call in turn"
        f"{_more_may_help(m, run)}"
    )


def overhead(m: Measurements, run: Run) -> float:
    """Seconds lost per task compared with perfect scaling: hand-offs, pickling,
    and contention (a held GIL shows up here). Never below 0 (timing noise)."""
    if not m.items:
        return 0.0
    return max(0.0, (run.seconds * run.workers - m.wall) / m.items)


# ------------------------------------------------------------ predicted (auto)


def _predict(m: Measurements) -> Recommendation:
    """Inline, threads or processes for the rest of a map, from a short inline sample.

    A call mostly waiting is a job for threads (the waits overlap; the CPU part
    stays serial under the GIL, which the estimate assumes it holds); one mostly
    computing is a job for processes. Either must promise ``_MIN_GAIN`` over the
    loop once its costs are counted, else the rest runs inline too.
    """
    n, names = m.items, m.names
    sampled = f"the first {n} item{'s' if n != 1 else ''}"
    if m.remaining == 0:
        done = f"all {n} items ran while sampling ({fmt_seconds(m.wall)})"
        return Recommendation(names.inline, 1, None, done if n else "the input is empty")
    per_call = m.per_call
    if m.waiting >= _WAITING and names.thread in m.offered:
        backend, workers = names.thread, m.thread_workers
        parallel = max(m.cpu_per_call, per_call / workers) + _THREAD_COST
        why = (
            f"{sampled} spent {m.waiting:.0%} of their time waiting ({_usage(m)}): "
            f"threads overlap the waiting without pickling"
        )
    elif m.holds_gil() is False and names.thread in m.offered:
        backend, workers = names.thread, m.thread_workers
        parallel = per_call / min(workers, m.process_workers) + _THREAD_COST
        why = (
            f"{sampled} kept a CPU busy {1 - m.waiting:.0%} of the time ({_usage(m)}) and "
            f"the next ones run on two threads at once kept {m.threads_busy:.1f} CPUs busy: it "
            "releases the GIL, so threads run it side by side without pickling"
        )
    elif m.bytes_per_task is not None and names.process in m.offered:
        backend, workers = names.process, m.process_workers
        parallel = per_call / workers + _PROCESS_COST + m.bytes_per_task * _BYTE_COST
        if not m.processes_warm and m.remaining is not None:
            parallel += _PROCESS_START / m.remaining
        why = (
            f"{sampled} kept a CPU busy {1 - m.waiting:.0%} of the time ({_usage(m)}): "
            f"{_who(m, Run(backend, workers, 0))} run them side by side{_gil_note(m)}"
        )
    else:
        return Recommendation(
            names.inline,
            1,
            None,
            f"{sampled} took {fmt_seconds(per_call)} per call and their data does not "
            "pickle: processes are out, and threads would not overlap anything",
        )
    if workers < 2:
        return Recommendation(
            names.inline,
            1,
            None,
            f"{sampled} took {fmt_seconds(per_call)} per call, but with workers=1 nothing "
            "runs side by side: the rest runs inline",
        )
    gain = per_call / parallel if parallel > 0 else 1.0
    if gain < _MIN_GAIN:
        return Recommendation(
            names.inline,
            1,
            None,
            f"{sampled} took {fmt_seconds(per_call)} per call{_cpu_share(m)}: {backend} "
            f"would gain {gain:.1f}x at best, too little to hand the items over; the rest "
            f"runs inline{_gil_note(m)}",
        )
    return Recommendation(backend, workers, None, f"{why} (estimated {gain:.1f}x)")


def _gil_note(m: Measurements) -> str:
    """What the overlap probe found, when it ran and found the GIL held."""
    if m.threads_busy is None:
        return ""
    return (
        f" (the next ones on two threads at once kept {m.threads_busy:.1f} CPUs busy: it holds the "
        "GIL, so threads would not)"
    )


def _cpu_share(m: Measurements) -> str:
    """The CPU's share of a call, for a reason; left out for calls so short that
    reading the clocks around them makes the share meaningless."""
    return f" ({1 - m.waiting:.0%} of it on the CPU)" if m.per_call >= 10e-6 else ""


# ------------------------------------------------------------------ formatting


def fmt_seconds(seconds: float) -> str:
    """``0.0032`` -> ``"3.2 ms"``: two or three significant digits, readable units."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns" if seconds > 0 else "0 s"


def fmt_bytes(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"
