"""The SQLite file under the embedded store: schema, migrations, transactions, resourceVersions.

Layout: ``objects`` holds one row per (kind, namespace, name) with the object's JSON;
``changes`` is the watch log, one row per write keyed by the resourceVersion it produced;
``counter`` holds the global, monotonically increasing resourceVersion and how far the
log was compacted; ``events`` holds Kubernetes-style events. The file runs in WAL mode
and every write is one ``BEGIN IMMEDIATE`` transaction (object row, log row and counter
together), so a crash at any line leaves either the whole write or none of it, and a
second connection on the same file (another thread or process) sees it all.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "SqliteDatabase"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a file this code wrote; a newer file is refused."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    rv INTEGER NOT NULL,
    compacted_rv INTEGER NOT NULL
);
INSERT OR IGNORE INTO counter (id, rv, compacted_rv) VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    rv INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS changes (
    rv INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_kind ON changes (kind, rv);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    source TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_timestamp TEXT NOT NULL,
    last_timestamp TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_object ON events (kind, namespace, name);
"""

_COMPACT_EVERY = 64
HISTORY_BYTES = 64 * 1024 * 1024
"""Most bytes of object bodies the watch log keeps (each body is at most 1.5 MiB)."""


class SqliteDatabase:
    """One connection to the store's file, opened (and migrated) on construction.

    Every method is thread-safe: one lock serialises the connection. Writers bump a
    sequence number and wake the threads waiting in :meth:`wait_for_write`.

    Args:
        path: The database file (parent directories are created) or ``":memory:"``.
        history: How many changes the watch log keeps (older ones are compacted away).
        history_bytes: Most bytes of object bodies the watch log keeps (whichever limit is
            reached first compacts; a watch resuming from before it gets ``Expired``).

    Raises:
        RuntimeError: The file was written by a newer Corral (its schema version is higher).
    """

    def __init__(self, path: str, *, history: int, history_bytes: int = HISTORY_BYTES) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # SQLite gives -wal/-shm the same mode
            os.chmod(path, 0o600)
        self.history = history
        self.history_bytes = history_bytes
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        self._write_seq = 0
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{path}: schema version {version} is newer than this Corral ({SCHEMA_VERSION})")
            self._conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        log.debug("Opened store %s", path)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several reads."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; commits on success, rolls back on any error, then wakes waiters."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        with self._changed:
            self._write_seq += 1
            self._changed.notify_all()

    def next_rv(self, conn: sqlite3.Connection) -> int:
        """Take the next resourceVersion inside a write; compacts the watch log now and then."""
        rv: int = conn.execute("UPDATE counter SET rv = rv + 1 WHERE id = 1 RETURNING rv").fetchone()[0]
        if rv % _COMPACT_EVERY == 0:
            upto = rv - self.history if rv > self.history else 0
            over = conn.execute(  # the newest change beyond the byte budget, counting from the newest
                "SELECT max(rv) FROM (SELECT rv, sum(length(body)) OVER (ORDER BY rv DESC) AS total FROM changes) "
                "WHERE total > ?",
                (self.history_bytes,),
            ).fetchone()[0]
            upto = max(upto, over or 0)
            if upto:
                conn.execute("DELETE FROM changes WHERE rv <= ?", (upto,))
                conn.execute("UPDATE counter SET compacted_rv = max(compacted_rv, ?) WHERE id = 1", (upto,))
        return rv

    @staticmethod
    def current_rv(conn: sqlite3.Connection) -> int:
        """The newest resourceVersion written (inside a read or write)."""
        rv: int = conn.execute("SELECT rv FROM counter WHERE id = 1").fetchone()[0]
        return rv

    @staticmethod
    def compacted_rv(conn: sqlite3.Connection) -> int:
        """The newest resourceVersion the watch log no longer holds (inside a read or write)."""
        rv: int = conn.execute("SELECT compacted_rv FROM counter WHERE id = 1").fetchone()[0]
        return rv

    @property
    def write_seq(self) -> int:
        """How many writes this instance committed; pass it to :meth:`wait_for_write`."""
        with self._changed:
            return self._write_seq

    def wait_for_write(self, seen: int, timeout: float, stopped: Callable[[], bool]) -> None:
        """Block until a write after ``seen`` commits here, ``stopped()`` turns true, or ``timeout`` passes."""
        with self._changed:
            self._changed.wait_for(lambda: self._write_seq != seen or stopped(), timeout)

    def wake(self) -> None:
        """Wake every thread in :meth:`wait_for_write` (to re-check its ``stopped``)."""
        with self._changed:
            self._changed.notify_all()

    def ping(self) -> None:
        """Run a trivial query."""
        with self._lock:
            self._conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
