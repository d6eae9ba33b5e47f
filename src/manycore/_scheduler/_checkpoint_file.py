"""The SQLite file behind ``checkpoint=``: a ``meta`` table (key, value: format,
version, the function's fingerprint and name, the item count when known) and
one ``items`` row per finished item: ``(idx INTEGER PRIMARY KEY, input_hash
BLOB, ok INTEGER, payload BLOB)``, the payload a pickled value (``ok=1``) or a
packed exception (``ok=0``). What runs, and when, is ``_checkpoint``'s business.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator

from manycore._core import CheckpointMismatch

__all__ = ["FORMAT", "VERSION", "CheckpointFile"]

FORMAT = "manycore-checkpoint"
VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
    "CREATE TABLE IF NOT EXISTS items (idx INTEGER PRIMARY KEY, input_hash BLOB NOT NULL,"
    " ok INTEGER NOT NULL, payload BLOB)",
)
_PER_INSERT = 100  # rows stored by one INSERT statement
_FOREIGN = "refusing to write into it: choose another path"


class CheckpointFile:
    """The SQLite file: ``meta`` (key, value) and one ``items`` row per finished
    item. Opened in autocommit mode; each batch of rows is its own transaction.

    The file is first read without changing anything (:func:`_read_only`): one
    that is refused (another program's database, a file that cannot be written)
    is left byte for byte as it was, with no ``-wal`` or ``-shm`` file beside it.
    ``write=False``: only read (``mc.read_checkpoint``), never changed."""

    def __init__(self, path: str, *, write: bool = True):
        self.path = path
        tables, self.meta = self._inspect(write)
        if tables - {"meta", "items"} or (tables and self.meta.get("format") != FORMAT):
            raise self.mismatch("is not a manycore checkpoint (other tables)", _FOREIGN)
        if not write:
            self._db = _read_only(path)
            return
        _check_writable(path)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise OSError(f"checkpoint={path!r} cannot be opened: {exc}") from exc
        try:
            # WAL: a commit is one append to the log, and a process killed at any
            # point leaves the last commit whole. NORMAL: no fsync per commit;
            # only an OS crash or power loss could lose the latest ones.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            tables, self.meta = _read_meta(self._db)  # (again: it may have changed since)
        except sqlite3.Error as exc:
            self.close()
            if _unwritable(exc):
                raise _permission(path, str(exc)) from exc
            raise self.mismatch(f"is not a manycore checkpoint ({exc})", _FOREIGN) from exc
        if tables - {"meta", "items"} or (tables and self.meta.get("format") != FORMAT):
            self.close()  # another program's database: never write into it
            raise self.mismatch("is not a manycore checkpoint (other tables)", _FOREIGN)

    def _inspect(self, write: bool) -> tuple[set[str], dict[str, object]]:
        """The file's tables and meta, read without changing anything (none yet
        if there is no file)."""
        if not os.path.exists(self.path):
            return set(), {}
        try:
            db = _read_only(self.path)
            try:
                return _read_meta(db)
            finally:
                db.close()
        except sqlite3.Error as exc:
            if write and _is_sqlite(self.path):
                # An SQLite file that cannot be read so (a -wal without its -shm,
                # a lock): the writing connection reads it again, and refuses then.
                return set(), {}
            raise self.mismatch(f"is not a manycore checkpoint ({exc})", _FOREIGN) from exc

    def mismatch(self, what: str, fix: str = "") -> CheckpointMismatch:
        fix = fix or (
            'pass resume="force" to keep the stored results anyway (only items whose own '
            "input changed are computed again), or resume=False (or delete the file) "
            "to start over"
        )
        return CheckpointMismatch(f"checkpoint {self.path!r} {what}: {fix}", path=self.path)

    def check(self, fn_hash: str, fn_name: str, resume: bool | str) -> None:
        """Refuse a file of another format version, or of another function unless
        ``resume="force"``, before anything is read or run."""
        if resume is False or not self.meta:
            return
        if self.meta.get("version") != VERSION:
            raise self.mismatch(
                f"has format version {self.meta.get('version')}; this manycore reads "
                f"version {VERSION}",
                "pass resume=False (or delete the file) to start over",
            )
        if self.meta.get("fn") == fn_hash or resume == "force":
            return
        old = self.meta.get("fn_name")
        if old != fn_name:
            raise self.mismatch(f"holds results of function {old!r}, not of {fn_name!r}")
        raise self.mismatch(
            f"holds results of {fn_name!r} as it was then: its code, defaults or closure "
            "(or the code of a function it calls) changed since, or map became starmap"
        )

    def last_done(self) -> int | None:
        """The highest index of a stored success, if any."""
        if not self.meta:
            return None
        row = self._db.execute(
            "SELECT idx FROM items WHERE ok = 1 ORDER BY idx DESC LIMIT 1"
        ).fetchone()
        return None if row is None else int(row[0])

    def done_in(self, lo: int, hi: int) -> list[tuple[int, bytes, bytes]]:
        """(index, input fingerprint, payload) of the stored successes from ``lo``
        to ``hi`` (excluded), in index order."""
        return self._db.execute(
            "SELECT idx, input_hash, payload FROM items WHERE idx >= ? AND idx < ? AND ok = 1"
            " ORDER BY idx",
            (lo, hi),
        ).fetchall()

    def all_rows(self) -> list[tuple[int, int, bytes]]:
        return self._db.execute("SELECT idx, ok, payload FROM items ORDER BY idx").fetchall()

    def begin(self, fn_hash: str, fn_name: str, fresh: bool, total: int | None) -> None:
        """Create the tables (first run), empty them (``fresh``), record the run."""
        meta = {"format": FORMAT, "version": VERSION, "fn": fn_hash, "fn_name": fn_name}
        if total is not None:
            meta["total"] = total
        try:
            with self._transaction() as db:
                if fresh:  # (dropped, not emptied: another version's schema goes too)
                    db.execute("DROP TABLE IF EXISTS items")
                    db.execute("DROP TABLE IF EXISTS meta")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
        except sqlite3.Error as exc:
            if _unwritable(exc):
                raise _permission(self.path, str(exc)) from exc
            raise

    def put(self, rows: Iterable[tuple[int, bytes, int, bytes]]) -> None:
        """Store rows (one finished batch) in one transaction. They go
        ``_PER_INSERT`` to a statement: binding and stepping a statement per row
        costs half as much again as the whole insert of many rows at once."""
        flat = list(itertools.chain.from_iterable(rows))
        step = 4 * _PER_INSERT
        whole = len(flat) - len(flat) % step
        with self._transaction() as db:
            if whole:
                groups = (flat[i : i + step] for i in range(0, whole, step))
                db.executemany(_insert(_PER_INSERT), groups)
            if whole < len(flat):
                db.execute(_insert((len(flat) - whole) // 4), flat[whole:])

    def set_total(self, total: int) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('total', ?)", (total,))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


@functools.cache
def _insert(rows: int) -> str:
    return "INSERT OR REPLACE INTO items VALUES " + ", ".join(["(?, ?, ?, ?)"] * rows)


def _read_only(path: str) -> sqlite3.Connection:
    """A connection that changes nothing, in the file or beside it. Without a
    ``-wal`` file the main file is the whole database, and is read as immutable:
    SQLite would otherwise create ``-wal`` and ``-shm`` files for a database in
    WAL mode, even read-only, and leave them behind."""
    flags = "mode=ro" if os.path.exists(path + "-wal") else "mode=ro&immutable=1"
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?{flags}"
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)


def _is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _read_meta(db: sqlite3.Connection) -> tuple[set[str], dict[str, object]]:
    found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    tables = {r[0] for r in found}
    meta = db.execute("SELECT key, value FROM meta") if "meta" in tables else ()
    return tables, dict(meta)


def _check_writable(path: str) -> None:
    """Refuse, before SQLite creates anything, a file or folder it could not
    write (a read-only connection would still leave ``-wal``/``-shm`` files)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return  # SQLite says so, as "cannot be opened"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise _permission(path, "the file is read-only")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _permission(path, f"its folder {folder!r} is read-only")


def _unwritable(exc: sqlite3.Error) -> bool:
    """The file or its folder cannot be written (SQLite's WAL needs both)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"))


def _permission(path: str, why: str) -> PermissionError:
    return PermissionError(
        f"checkpoint={path!r} cannot be written ({why}): the file and its folder must "
        "be writable (SQLite keeps a -wal and a -shm file beside it)"
    )
