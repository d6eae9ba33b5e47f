"""The GIL-free kernel of ``manycore demo`` and benchmarks/gilfree.py.

:func:`load` returns the Mandelbrot band kernel (``_mandel.py``) compiled with
Pythran where it is installed (compiled once into a cache folder, never into
the source tree), else the same computation vectorised with NumPy (whose loops
also release the GIL, on arrays this size), else None: neither is part of the
base install (extras ``pythran`` and ``numpy``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Kernel", "band", "load", "mandel_band_numpy"]

_SOURCE = Path(__file__).with_name("_mandel.py")


@dataclass(frozen=True)
class Kernel:
    name: str  # "pythran" or "numpy"
    fn: Callable[[int, int, int, int], int]  # mandel_band(band, bands, width, maxiter)


def load(pythran: bool = True, say: Callable[[str], None] | None = None) -> Kernel | None:
    """The fastest kernel available here (see the module's docstring)."""
    if pythran:
        compiled = _pythran(say)
        if compiled is not None:
            return Kernel("pythran", compiled)
    if importlib.util.find_spec("numpy") is None:
        return None
    return Kernel("numpy", mandel_band_numpy)


@functools.cache
def _loaded(kind: str) -> Callable[[int, int, int, int], int]:
    kernel = load(pythran=kind == "pythran")
    if kernel is None or kernel.name != kind:
        raise RuntimeError(f"the {kind} kernel is not available in this process")
    return kernel.fn


def band(number: int, bands: int, width: int, maxiter: int, kind: str) -> int:
    """``mandel_band`` with the ``kind`` kernel ("pythran" or "numpy"), loaded on
    first use in this process: picklable by reference, so worker processes
    load their own (a compiled function does not pickle)."""
    return _loaded(kind)(number, bands, width, maxiter)


def mandel_band_numpy(band: int, bands: int, width: int, maxiter: int) -> int:
    """``_mandel.mandel_band``, one NumPy operation over the band's points per step."""
    import numpy as np

    rows = width // bands
    r = np.arange(band * rows, (band + 1) * rows, dtype=np.float64)
    c = np.arange(width, dtype=np.float64)
    ci = np.repeat(-1.5 + 3.0 * r / width, width)
    cr = np.tile(-2.0 + 3.0 * c / width, rows)
    zr = np.zeros_like(cr)
    zi = np.zeros_like(cr)
    counts = np.zeros(cr.shape, dtype=np.int64)
    live = np.arange(cr.size)  # points still inside the radius
    for _ in range(maxiter):
        inside = zr * zr + zi * zi < 4.0
        live, zr, zi, cr, ci = live[inside], zr[inside], zi[inside], cr[inside], ci[inside]
        if live.size == 0:
            break
        counts[live] += 1
        zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
    return int(counts.sum())


def _pythran(say: Callable[[str], None] | None) -> Callable[[int, int, int, int], int] | None:
    """The compiled kernel, compiling it first if this version of it is not cached."""
    if importlib.util.find_spec("pythran") is None or shutil.which("g++") is None:
        return None
    digest = hashlib.sha256(_SOURCE.read_bytes() + sys.version.encode()).hexdigest()[:12]
    folder = _cache() / f"mandel-{digest}"
    built = next(folder.glob("_mandel_pythran*.so"), None) if folder.is_dir() else None
    if built is None:
        built = _compile(folder, say)
        if built is None:
            return None
    spec = importlib.util.spec_from_file_location("_mandel_pythran", built)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn: Callable[[int, int, int, int], int] = module.mandel_band
    return fn


def _cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "manycore" / "pythran"


def _compile(folder: Path, say: Callable[[str], None] | None) -> Path | None:
    """``pythran -O2`` into ``folder``; None (and a line said) if it fails."""
    if say is not None:
        say("compiling the Pythran kernel once (about a minute)...")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "_mandel_pythran.so"
    beside = Path(sys.executable).with_name("pythran")  # the venv's, even if not on PATH
    tool = str(beside) if beside.exists() else (shutil.which("pythran") or "pythran")
    command = [tool, "-O2", str(_SOURCE), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        if say is not None:
            say(f"pythran failed, using NumPy instead: {done.stderr.strip()[-300:]}")
        return None
    return out
