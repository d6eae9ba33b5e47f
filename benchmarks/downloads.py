"""I/O-bound downloads: sequential urllib, the threads backend, the asyncio backend.

A local HTTP server (``http.server.ThreadingHTTPServer`` on 127.0.0.1, in a child
process so that it does not share this process's GIL) answers every GET after
``--delay`` seconds (50 ms by default), the way a remote server would. The same
``--urls`` URLs are then downloaded by:

    sequential        ``[urllib.request.urlopen(u).read() for u in urls]``
    threads           ``mc.map(get, urls, backend="threads")`` (urllib, default workers)
    asyncio           ``mc.map(fetch, urls, backend="asyncio", concurrency=100)``
                      (an HTTP/1.0 client on ``asyncio.open_connection``)
    threads x100      ``mc.map(get, urls, backend="threads", workers=100)``: the
                      same concurrency as asyncio, on threads

Every runner is warmed up once (its pool is built) outside the timed region; the
repeats go round-robin over the runners, so load from elsewhere falls on all of
them alike. Times are medians; every body is checked. A Markdown table goes to
stdout.

    .venv/bin/python benchmarks/downloads.py                  # 200 URLs, 5 repeats
    .venv/bin/python benchmarks/downloads.py --urls 50 --repeat 3 --delay 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import manycore as mc


class _Handler(BaseHTTPRequestHandler):
    delay = 0.05

    def do_GET(self) -> None:
        time.sleep(self.delay)  # the server's own work: a remote server's latency
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(delay: float) -> None:
    """The child process: serve until stdin closes; the port goes to stdout first."""
    _Handler.delay = delay
    ThreadingHTTPServer.request_queue_size = 256  # 100 connects at once: none dropped
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    print(httpd.server_address[1], flush=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sys.stdin.read()  # the parent closes it (or dies): stop
    httpd.shutdown()


# ------------------------------------------------------------------- clients


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


async def fetch(url: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if int(head.split(None, 2)[1]) != 200:
        raise OSError(f"{url}: {head[:40]!r}")
    return body


def _default_threads() -> int:
    with mc.Pool(backend="threads") as pool:
        return pool.workers


RUNNERS: dict[str, tuple[str, Callable[[list[str]], list[bytes]]]] = {
    "sequential": ("urllib, one after the other", lambda urls: [get(u) for u in urls]),
    "threads": (
        f"urllib, `backend='threads'`, default workers ({_default_threads()})",
        lambda urls: mc.map(get, urls, backend="threads"),
    ),
    "asyncio": (
        "`asyncio.open_connection`, `backend='asyncio'`, `concurrency=100`",
        lambda urls: mc.map(fetch, urls, backend="asyncio", concurrency=100),
    ),
    "threads x100": (
        "urllib, `backend='threads'`, `workers=100`",
        lambda urls: mc.map(get, urls, backend="threads", workers=100),
    ),
}


# --------------------------------------------------------------------- run


def measure(urls: list[str], repeat: int) -> dict[str, list[float]]:
    expected = [urllib.parse.urlsplit(u).path.encode() for u in urls]
    for name, (_, run) in RUNNERS.items():  # warm-up: builds the pools
        if run(urls[:4]) != expected[:4]:
            raise SystemExit(f"{name}: WRONG RESULT in the warm-up")
    times: dict[str, list[float]] = {name: [] for name in RUNNERS}
    for _ in range(repeat):
        for name, (_, run) in RUNNERS.items():
            started = time.perf_counter()
            out = run(urls)
            times[name].append(time.perf_counter() - started)
            if out != expected:
                raise SystemExit(f"{name}: WRONG RESULT")
    return times


def table(times: dict[str, list[float]], n: int, delay: float) -> list[str]:
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    lines = [
        "| runner | how | median (s) | URLs/s | speed-up vs sequential | vs threads |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, (how, _) in RUNNERS.items():
        m = medians[name]
        lines.append(
            f"| {name} | {how} | {m:.3f} | {n / m:,.0f} | "
            f"{medians['sequential'] / m:.1f}x | {medians['threads'] / m:.1f}x |"
        )
    lines.append("")
    rounds = -(-n // 100)
    lines.append(
        f"{n} URLs, {delay * 1000:g} ms each on the server; 100 at a time cannot take "
        f"less than {rounds} x {delay * 1000:g} ms = {rounds * delay:.3f} s."
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--urls", type=int, default=200, help="URLs per run (default 200)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--repeat", type=int, default=5, help="runs per runner (default 5)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.delay)
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--delay", str(args.delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        urls = [f"http://127.0.0.1:{port}/page/{i}" for i in range(args.urls)]
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        times = measure(urls, args.repeat)
        print("\n".join(table(times, args.urls, args.delay)))
        print(
            f"\nRepeats: {args.repeat}; load average {load} at the start; "
            f"{mc.usable_cpus()} usable CPUs; Python {sys.version.split()[0]}."
        )
    finally:
        mc.shutdown_default_pools()
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
