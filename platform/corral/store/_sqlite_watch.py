"""Watches on the embedded store: the ``changes`` log each write appends to, and the tail that reads it.

Every write appends one row (its resourceVersion, ADDED/MODIFIED/DELETED and the object's
body) in the same transaction as the object row. A watch replays the current objects
(when it has no resourceVersion to resume from), then reads the log after the last
version it saw; the log is compacted to the store's ``history``, and resuming from before
that fails with :class:`~corral.store.Expired`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import deque
from typing import Any

from corral.api.v1alpha1 import Resource

from ._errors import Expired, Invalid
from ._objects import canonical, field_problem
from ._protocol import Store, Watch, WatchEvent, WatchEventType
from ._selectors import LabelSelector
from ._sqlite_db import SqliteDatabase

__all__ = ["SqliteWatch", "log_change"]


def log_change(conn: sqlite3.Connection, rv: int, type_: WatchEventType, body: dict[str, Any]) -> None:
    """Append the write that produced ``rv`` to the watch log; inside that write's transaction."""
    meta = body["metadata"]
    conn.execute(
        "INSERT INTO changes (rv, kind, namespace, name, type, body) VALUES (?, ?, ?, ?, ?, ?)",
        (rv, body["kind"], meta.get("namespace") or "", meta["name"], type_, canonical(body)),
    )


class SqliteWatch(Watch):
    """A watch on the embedded store: replays the snapshot (if asked), then tails ``changes``.

    Args:
        store: The store whose ``list`` gives the snapshot.
        db: The store's database, whose log is tailed.
        cls: The kind watched.
        namespace: One namespace, or ``None`` for all (ignored for a cluster-scoped kind).
        since: Resume after this resourceVersion; ``None``, ``""`` or ``"0"`` replays first.
        selector: Only events whose object matches.
        timeout: End after this many seconds (``None``: never).
        poll_interval: How often to look for writes made through another connection.

    Raises:
        Invalid: ``since`` is not a resourceVersion of this store.
        Expired: ``since`` is older than the retained history.
    """

    _BATCH = 256

    def __init__(
        self,
        store: Store,
        db: SqliteDatabase,
        cls: type[Resource],
        *,
        namespace: str | None,
        since: str | None,
        selector: LabelSelector,
        timeout: float | None,
        poll_interval: float,
    ) -> None:
        self._db = db
        self._cls = cls
        self._namespace = namespace if cls.NAMESPACED else None
        self._selector = selector
        self._poll_interval = poll_interval
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._stopped = threading.Event()
        self._pending: deque[WatchEvent] = deque()
        self._seen_seq = -1
        self._fetched_at = 0.0
        if since in (None, "", "0"):
            listed = store.list(cls, self._namespace, selector)
            self._pending.extend(WatchEvent("ADDED", item) for item in listed.items)
            self._last = int(listed.resource_version)
        else:
            try:
                self._last = int(str(since))
            except ValueError:
                raise Invalid(
                    f"resourceVersion {since!r} is not valid for this store",
                    [field_problem("resourceVersion", "must be a resourceVersion returned by this store")],
                ) from None
            self._check_expired()

    def _check_expired(self) -> None:
        with self._db.read() as conn:
            compacted = self._db.compacted_rv(conn)
        if self._last < compacted:
            raise Expired(
                f"too old resource version: {self._last} ({compacted}); list again and watch from the list's "
                "resourceVersion",
                kind=self._cls.KIND,
            )

    @property
    def done(self) -> bool:
        """True once stopped or past the timeout."""
        return self._stopped.is_set() or (self._deadline is not None and time.monotonic() >= self._deadline)

    def stop(self) -> None:
        """End the watch; a blocked ``poll`` returns within one poll interval."""
        self._stopped.set()
        self._db.wake()

    def _fetch(self) -> None:
        sql = "SELECT rv, type, body FROM changes WHERE kind = ? AND rv > ?"
        args: list[Any] = [self._cls.KIND, self._last]
        if self._namespace is not None:
            sql += " AND namespace = ?"
            args.append(self._namespace)
        sql += f" ORDER BY rv LIMIT {self._BATCH}"
        with self._db.read() as conn:
            compacted = self._db.compacted_rv(conn)
            rows = conn.execute(sql, args).fetchall()
        if self._last < compacted and (not rows or rows[0][0] > compacted):
            self._check_expired()
        for rv, type_, text in rows:
            self._last = rv
            body = json.loads(text)
            if self._selector.matches(body["metadata"].get("labels")):
                self._pending.append(WatchEvent(type_, self._cls.model_validate(body)))

    def poll(self, timeout: float) -> WatchEvent | None:
        """Return the next event, or ``None`` after ``timeout`` seconds or once done.

        ``poll(0)`` never blocks and is cheap when nothing changed: the log is read only after
        a write through this store's connection, or once per poll interval (writes made
        through another connection), so callers that must not hold a thread (the control
        API's watch streams) can poll without waiting here.
        """
        end = time.monotonic() + timeout
        while True:
            if self._pending:
                return self._pending.popleft()
            if self.done:
                return None
            seen = self._db.write_seq
            now = time.monotonic()
            if seen != self._seen_seq or now - self._fetched_at >= self._poll_interval:
                self._seen_seq, self._fetched_at = seen, now
                self._fetch()
            if self._pending:
                continue
            remaining = end - time.monotonic()
            if self._deadline is not None:
                remaining = min(remaining, self._deadline - time.monotonic())
            if remaining <= 0:
                return None
            self._db.wait_for_write(seen, min(remaining, self._poll_interval), self._stopped.is_set)
