"""Kubernetes-style events in the embedded store's ``events`` table.

An event is keyed by (kind, namespace, name, uid, type, reason, message, source); a
repeat of the same key bumps ``count`` and ``last_timestamp`` of the one row instead of
adding another, as the Kubernetes event recorder folds repeats.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from ._protocol import EventRecord

__all__ = ["EventKey", "list_events", "record_event"]

EventKey = tuple[str, str, str, str, str, str, str, str]
"""(kind, namespace, name, uid, type, reason, message, source): what makes two events the same."""

_SELECT = (
    "SELECT kind, namespace, name, uid, type, reason, message, source, count, first_timestamp, last_timestamp "
    "FROM events"
)


def record_event(conn: sqlite3.Connection, key: EventKey, now: str) -> EventRecord:
    """Add the event ``key`` at ``now`` (RFC 3339), or fold it into the same earlier one; inside a write."""
    row = conn.execute(
        "SELECT id FROM events WHERE kind = ? AND namespace = ? AND name = ? AND uid = ? AND type = ? "
        "AND reason = ? AND message = ? AND source = ?",
        key,
    ).fetchone()
    if row:
        conn.execute("UPDATE events SET count = count + 1, last_timestamp = ? WHERE id = ?", (now, row[0]))
        event_id = row[0]
    else:
        event_id = conn.execute(
            "INSERT INTO events (kind, namespace, name, uid, type, reason, message, source, count, "
            "first_timestamp, last_timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING id",
            (*key, now, now),
        ).fetchone()[0]
    return _record(conn.execute(_SELECT + " WHERE id = ?", (event_id,)).fetchone())


def list_events(conn: sqlite3.Connection, kind: str, namespace: str, name: str) -> list[EventRecord]:
    """The events about one object (``namespace`` ``""`` when cluster-scoped), oldest first."""
    rows = conn.execute(
        _SELECT + " WHERE kind = ? AND namespace = ? AND name = ? ORDER BY last_timestamp, id",
        (kind, namespace, name),
    ).fetchall()
    return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> EventRecord:
    kind, namespace, name, uid, type_, reason, message, source, count, first, last = row
    return EventRecord(
        kind=kind,
        namespace=namespace or None,
        name=name,
        uid=uid or None,
        type=type_,
        reason=reason,
        message=message,
        count=count,
        first_timestamp=datetime.fromisoformat(first),
        last_timestamp=datetime.fromisoformat(last),
        source=source,
    )
