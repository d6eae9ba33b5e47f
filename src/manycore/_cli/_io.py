"""What ``manycore run`` reads and writes: inputs from arguments or lines, JSON lines out."""

from __future__ import annotations

import abc
import bisect
import json
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from manycore._core import Failure

__all__ = [
    "BadInput",
    "InputReadError",
    "Inputs",
    "JsonLines",
    "UsageError",
    "describe",
    "dumps",
    "open_inputs",
]

FLUSH_EVERY = 0.05  # seconds a result line may wait in the output buffer


class UsageError(Exception):
    """A mistake in the command line: one line on stderr, status 2, nothing run."""


class InputReadError(Exception):
    """The input file or stdin could not be read (an OS error, text that is not UTF-8)."""


class BadInput:
    """An input line that is not JSON (or not a JSON array under ``--star``): it fails
    its own item when run, as a function that raised would, instead of the run."""

    __slots__ = ("message", "text")

    def __init__(self, text: str, message: str):
        self.text = text
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (BadInput, (self.text, self.message))


class Inputs(abc.ABC):
    """The items of a run, and where each came from."""

    from_lines = False

    @abc.abstractmethod
    def items(self) -> Iterable[object]:
        """What ``mc.imap`` gets: a list, or a generator reading the lines as needed."""

    def line_of(self, index: int) -> int | None:
        """The line (from 1) that item ``index`` (from 0) was read from."""
        return None

    def failure_record(self, failure: Failure, error: str) -> dict[str, object]:
        """The error object written in a failed item's place (``--on-error collect``)."""
        record: dict[str, object] = {"index": failure.index}
        line = self.line_of(failure.index)
        if line is not None:
            record["line"] = line
        value = failure.input
        record["input"] = value.text if isinstance(value, BadInput) else value
        record["error"] = error
        return record

    def close(self) -> None:  # noqa: B027  (optional: only a file input has one)
        """Close what the inputs were read from."""


class ArgInputs(Inputs):
    """INPUT arguments: with ``--json`` all are parsed before any work."""

    def __init__(self, texts: Sequence[str], as_json: bool, star: bool):
        self._items: list[object] = list(texts)
        if as_json:
            self._items = [_parse_argument(i, text, star) for i, text in enumerate(texts)]

    def items(self) -> list[object]:
        return self._items


class LineInputs(Inputs):
    """The lines of a file or stdin, read as the workers need them: UTF-8, the line
    break removed, empty lines (with ``--json``, blank ones) skipped. A line that
    cannot be read as asked fails its own item (:class:`BadInput`)."""

    from_lines = True

    def __init__(self, stream: IO[Any], name: str, as_json: bool, star: bool, owned: bool):
        self._stream = stream  # binary (decoded line by line here), or text
        self._name = name
        self._json = as_json
        self._star = star
        self._owned = owned
        self._skipped: list[int] = []  # per skipped line: the items read before it

    def items(self) -> Iterator[object]:
        count = 0
        for number, text in self._lines():
            if isinstance(text, str) and not (text.strip() if self._json else text):
                self._skipped.append(count)
                continue
            count += 1
            if self._json and isinstance(text, str):
                yield _parse_line(number, text, self._star)
            else:
                yield text

    def _lines(self) -> Iterator[tuple[int, str | BadInput]]:
        lines = iter(self._stream)
        number = 0
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except OSError as exc:
                raise InputReadError(f"reading {self._name}, line {number + 1}: {exc}") from exc
            number += 1
            yield number, _text(raw, number)

    def line_of(self, index: int) -> int:
        return index + 1 + bisect.bisect_right(self._skipped, index)

    def close(self) -> None:
        if self._owned:
            self._stream.close()


def _text(raw: bytes | str, number: int) -> str | BadInput:
    """A line without its line break (\\n or \\r\\n), decoded from UTF-8."""
    if isinstance(raw, bytes):
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", "replace")
            return BadInput(
                text, f"line {number}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            )
    raw = raw[:-1] if raw.endswith("\n") else raw
    return raw[:-1] if raw.endswith("\r") else raw


def open_inputs(texts: Sequence[str], path: str | None, as_json: bool, star: bool) -> Inputs:
    """The INPUT arguments, else the lines of ``path`` or (none, or '-') of stdin."""
    if path is None and texts and list(texts) != ["-"]:
        return ArgInputs(texts, as_json, star)
    if path is None or path == "-":
        return LineInputs(_stdin(), "stdin", as_json, star, owned=False)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by Inputs.close
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return LineInputs(stream, path, as_json, star, owned=True)


def _stdin() -> IO[Any]:
    stdin = sys.stdin
    if stdin is None:
        raise UsageError("no INPUT given and no stdin to read them from")
    if stdin.isatty():
        print(
            "manycore run: reading inputs from stdin, one per line (Ctrl-D ends)", file=sys.stderr
        )
    return getattr(stdin, "buffer", stdin)  # bytes: each line is decoded on its own


def _parse_argument(index: int, text: str, star: bool) -> object:
    try:
        return parse_json(text, star)
    except ValueError as exc:
        raise UsageError(f"item {index} {_short(text)}: {exc}") from None


def _parse_line(number: int, text: str, star: bool) -> object:
    try:
        return parse_json(text, star)
    except ValueError as exc:
        return BadInput(text, f"line {number}: {exc}")


def parse_json(text: str, star: bool) -> object:
    """One input as JSON; a ValueError with a short message if it is not (or, with
    ``star``, if it is not an array)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if star and not isinstance(value, list):
        raise ValueError(f"--star needs a JSON array, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class JsonLines:
    """Results out, one JSON line each, buffered: a background thread flushes what is
    waiting every :data:`FLUSH_EVERY` seconds, so a line never waits long behind a
    slow item while a fast stream of results costs no system call per line. A
    context manager: leaving it stops the thread and flushes the rest."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._lock = threading.Lock()
        self._waiting = False  # written since the last flush
        self._error: Exception | None = None  # what the flusher thread met (EPIPE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flusher, name="manycore-run-out", daemon=True)

    def __enter__(self) -> JsonLines:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()

    def write(self, value: object) -> None:
        line = dumps(value) + "\n"
        with self._lock:
            if self._error is not None:
                raise self._error
            self._stream.write(line)
            self._waiting = True

    def flush(self) -> None:
        with self._lock:
            if self._error is not None:
                raise self._error
            self._waiting = False
            self._stream.flush()

    def _flusher(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            with self._lock:
                if not self._waiting or self._error is not None:
                    continue
                self._waiting = False
                try:
                    self._stream.flush()
                except (OSError, ValueError) as exc:  # the reader went away: told on next write
                    self._error = exc


def dumps(value: object) -> str:
    """``value`` as one line of JSON: NumPy values through ``.tolist()``, anything
    else that JSON cannot hold as its ``repr()`` string."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):  # a dict key JSON cannot hold, a cycle
        return json.dumps(repr(value))


def _jsonable(value: object) -> object:
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, type):
        return tolist()
    return repr(value)


_ENCODER = json.JSONEncoder(default=_jsonable)  # built once: json.dumps(default=) builds one a call


def describe(exc: BaseException, with_type: bool = True) -> str:
    """``Type: first line of the message`` (one line)."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if not with_type:
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
