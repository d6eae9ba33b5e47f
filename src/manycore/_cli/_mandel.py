"""A Mandelbrot band: the compute kernel of the demo's GIL-free workload.

Plain Python that Pythran compiles ahead of time (see ``_kernel.py``); the
compiled function runs without the GIL, so threads run bands side by side.
Imported as is, it is the slow pure-Python reference. No manycore imports:
Pythran compiles this file alone.
"""

# pythran export mandel_band(int, int, int, int)


def mandel_band(band: int, bands: int, width: int, maxiter: int) -> int:
    """Iterations summed over the rows of ``band`` (of ``bands``) of a
    ``width`` x ``width`` view of the set."""
    rows = width // bands
    total = 0
    for r in range(band * rows, (band + 1) * rows):
        ci = -1.5 + 3.0 * r / width
        for c in range(width):
            cr = -2.0 + 3.0 * c / width
            zr = 0.0
            zi = 0.0
            n = 0
            while n < maxiter and zr * zr + zi * zi < 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                n += 1
            total += n
    return total
