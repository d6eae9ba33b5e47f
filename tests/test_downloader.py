"""The tutorial case for backend="asyncio": an HTTP downloader against a local
server, with fast, slow, failing, flaky and hanging URLs, from sync and async code.

The client is the standard library's ``asyncio.open_connection`` speaking HTTP/1.0;
the server is ``http.server.ThreadingHTTPServer`` on a free port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import manycore as mc

TIMEOUT = 1.0  # seconds one download may take
SLOW = 0.2  # what a slow URL takes: well inside the timeout


class HTTPError(Exception):
    def __init__(self, url: str, status: int):
        super().__init__(f"{url}: HTTP {status}")
        self.status = status


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # many connections at once: no SYN dropped and retried
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends the hanging requests at teardown


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        kind = self.path.split("/")[1]
        with self.server.lock:
            self.server.hits[self.path] += 1
            hits = self.server.hits[self.path]
        if kind == "slow":
            time.sleep(SLOW)
        elif kind == "hang":
            self.server.release.wait(30)
        if kind == "error" or (kind == "flaky" and hits == 1):
            self.send_error(500, "server error")
            return
        body = f"body of {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


async def fetch(url: str) -> bytes:
    """GET ``url`` with HTTP/1.0; the body, or HTTPError for a status of 400 or more."""
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()  # HTTP/1.0: the server closes when done
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(None, 2)[1])
    if status >= 400:
        raise HTTPError(url, status)
    return body


def _urls(server: Server) -> list[str]:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    kinds = ["fast"] * 6 + ["slow"] * 3 + ["error"] * 2 + ["flaky", "hang"]
    order = [0, 6, 9, 1, 12, 2, 7, 11, 3, 10, 4, 8, 5]  # kinds interleaved
    return [f"{base}/{kinds[i]}/{n}" for n, i in enumerate(order)]


OPTIONS: dict[str, Any] = {
    "backend": "asyncio",
    "timeout": TIMEOUT,
    "on_error": "collect",
    "retries": 2,
    "retry_on": HTTPError,  # a timeout is not retried: it would only take longer again
}


def _check(urls: list[str], results: list[Any], server: Server) -> None:
    assert len(results) == len(urls)
    for index, (url, result) in enumerate(zip(urls, results, strict=True)):
        path = urllib.parse.urlsplit(url).path
        kind = path.split("/")[1]
        if kind in ("fast", "slow", "flaky"):
            assert result == f"body of {path}".encode(), (index, result)
            continue
        assert isinstance(result, mc.Failure), (index, result)
        assert result.index == index and result.input == url
        if kind == "error":
            assert isinstance(result.exception, HTTPError)
            assert result.exception.status == 500
            assert f"manycore: raised while processing input item {index}" in (
                result.exception.__notes__
            )
        else:
            assert isinstance(result.exception, mc.TaskTimeout)
            assert result.exception.index == index
    with server.lock:
        hits = {path: n for path, n in server.hits.items()}
    for url in urls:
        path = urllib.parse.urlsplit(url).path
        expected = {"error": 3, "flaky": 2}.get(path.split("/")[1], 1)  # 2 retries; 1 retry
        assert hits.get(path) == expected, (path, hits)


def test_download_from_sync_code(server: Server) -> None:
    urls = _urls(server)
    started = time.monotonic()
    results = mc.map(fetch, urls, **OPTIONS)
    took = time.monotonic() - started
    _check(urls, results, server)
    # Side by side: about one timeout, not the sum of the slow and hanging ones.
    assert took < TIMEOUT + 3 * SLOW + 1.5, took


def test_download_from_async_code(server: Server) -> None:
    urls = _urls(server)

    async def main() -> tuple[list[Any], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        results = await mc.amap(fetch, urls, **OPTIONS)
        ticker.cancel()
        return results, ticks

    results, ticks = asyncio.run(main())
    _check(urls, results, server)
    assert ticks >= 10  # the caller's loop ran on during the downloads


def test_download_as_results_arrive(server: Server) -> None:
    urls = [u for u in _urls(server) if "/fast/" in u or "/slow/" in u]

    async def main() -> list[bytes]:
        return [body async for body in mc.aimap(fetch, urls, ordered=False, **OPTIONS)]

    bodies = asyncio.run(main())
    assert sorted(bodies) == sorted(
        f"body of {urllib.parse.urlsplit(u).path}".encode() for u in urls
    )
    # Fast pages first: every slow one comes after every fast one.
    kinds = [b.split(b"/")[1] for b in bodies]
    assert kinds == [b"fast"] * 6 + [b"slow"] * 3
