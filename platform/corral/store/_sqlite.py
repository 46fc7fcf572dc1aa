"""The embedded store: every resource in one SQLite file.

Layout: ``objects`` holds one row per (kind, namespace, name) with the object's JSON;
``changes`` is the watch log, one row per write keyed by the resourceVersion it produced;
``counter`` holds the global, monotonically increasing resourceVersion and how far the
log was compacted; ``events`` holds Kubernetes-style events. The file runs in WAL mode
and every write is one ``BEGIN IMMEDIATE`` transaction (object row, log row and counter
together), so a crash at any line leaves either the whole write or none of it, and a
second :class:`SqliteStore` on the same file (another thread or process) sees it all.
"""

from __future__ import annotations

import builtins
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.api import DocumentError, FieldProblem, parse_document
from corral.api.v1alpha1 import Resource

from ._errors import AlreadyExists, Conflict, Expired, Invalid, NotFound
from ._mergepatch import merge_patch
from ._protocol import (
    EventRecord,
    EventType,
    ResourceList,
    Store,
    Watch,
    WatchEvent,
    WatchEventType,
)
from ._selectors import LabelSelector

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
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
_USER_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _ns(namespace: str | None) -> str:
    return namespace or ""


class SqliteStore(Store):
    """The embedded store: one SQLite file (or ``":memory:"`` for a private, single-instance store).

    Args:
        path: The database file; parent directories are created.
        history: How many changes the watch log keeps; a watch resuming from before them
            gets :class:`~corral.store.Expired`.
        poll_interval: How often a watch looks for writes made through another connection
            (writes through this instance wake it at once).
    """

    def __init__(self, path: str | Path, *, history: int = 10_000, poll_interval: float = 0.25) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.history = history
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        self._write_seq = 0
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: schema version {version} is newer than this Corral ({_SCHEMA_VERSION})"
                )
            self._conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        log.debug("Opened store %s", self.path)

    # -- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several reads."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; commits on success, rolls back on any error."""
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

    def _next_rv(self, conn: sqlite3.Connection) -> int:
        rv: int = conn.execute("UPDATE counter SET rv = rv + 1 WHERE id = 1 RETURNING rv").fetchone()[0]
        if rv % _COMPACT_EVERY == 0 and rv > self.history:
            upto = rv - self.history
            conn.execute("DELETE FROM changes WHERE rv <= ?", (upto,))
            conn.execute("UPDATE counter SET compacted_rv = max(compacted_rv, ?) WHERE id = 1", (upto,))
        return rv

    @staticmethod
    def _log(conn: sqlite3.Connection, rv: int, type_: WatchEventType, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        conn.execute(
            "INSERT INTO changes (rv, kind, namespace, name, type, body) VALUES (?, ?, ?, ?, ?, ?)",
            (rv, body["kind"], _ns(meta.get("namespace")), meta["name"], type_, _canonical(body)),
        )

    @staticmethod
    def _validate(rc: type[Resource], body: dict[str, Any]) -> Resource:
        try:
            obj = parse_document(body, source=f"{rc.KIND}/{body.get('metadata', {}).get('name', '?')}")
        except DocumentError as exc:
            raise Invalid(str(exc), exc.problems, kind=rc.KIND, name=exc.name) from None
        if not isinstance(obj, rc):  # pragma: no cover - parse_document picks the class from body["kind"]
            raise Invalid(f"expected kind {rc.KIND}, got {obj.kind}", kind=rc.KIND)
        return obj

    def _load(self, conn: sqlite3.Connection, cls: type[Resource], namespace: str | None, name: str) -> dict[str, Any]:
        row = conn.execute(
            "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (cls.KIND, self._scope(cls, namespace), name),
        ).fetchone()
        if row is None:
            where = f"{namespace}/{name}" if cls.NAMESPACED and namespace else name
            raise NotFound(f'{cls.PLURAL}.corral.dev "{name}" not found ({cls.KIND} {where})', kind=cls.KIND, name=name)
        body: dict[str, Any] = json.loads(row[0])
        return body

    @staticmethod
    def _scope(rc: type[Resource], namespace: str | None) -> str:
        return _ns(namespace) if rc.NAMESPACED else ""

    @staticmethod
    def _ref(rc: type[Resource], namespace: str | None, name: str) -> str:
        return f"{namespace}/{name}" if rc.NAMESPACED else name

    def _store_row(self, conn: sqlite3.Connection, cls: type[Resource], body: dict[str, Any], rv: int) -> None:
        meta = body["metadata"]
        conn.execute(
            "INSERT OR REPLACE INTO objects (kind, namespace, name, uid, rv, body) VALUES (?, ?, ?, ?, ?, ?)",
            (cls.KIND, _ns(meta.get("namespace")), meta["name"], meta["uid"], rv, _canonical(body)),
        )

    # -- reads --------------------------------------------------------------------------

    def _get(self, cls: type[Resource], namespace: str | None, name: str) -> Resource:
        with self._read() as conn:
            body = self._load(conn, cls, namespace, name)
        return cls.model_validate(body)

    def _list(self, cls: type[Resource], namespace: str | None, selector: LabelSelector) -> ResourceList[Any]:
        sql = "SELECT body FROM objects WHERE kind = ?"
        args: list[Any] = [cls.KIND]
        if namespace is not None and cls.NAMESPACED:
            sql += " AND namespace = ?"
            args.append(namespace)
        sql += " ORDER BY namespace, name"
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
            rv = conn.execute("SELECT rv FROM counter WHERE id = 1").fetchone()[0]
        items = []
        for (text,) in rows:
            body = json.loads(text)
            if selector.matches(body["metadata"].get("labels")):
                items.append(cls.model_validate(body))
        return ResourceList(cls.KIND, items, str(rv))

    def resource_version(self) -> str:
        """The newest resourceVersion written to this file."""
        with self._read() as conn:
            return str(conn.execute("SELECT rv FROM counter WHERE id = 1").fetchone()[0])

    def ping(self) -> None:
        """Run a trivial query (readiness)."""
        with self._lock:
            self._conn.execute("SELECT 1").fetchone()

    # -- writes -------------------------------------------------------------------------

    def _create(self, cls: type[Resource], obj: Resource) -> Resource:
        body = obj.to_dict()
        meta = body.setdefault("metadata", {})
        if cls.NAMESPACED and not meta.get("namespace"):
            raise Invalid(
                f"{cls.KIND} {meta.get('name')}: metadata.namespace is required for a namespaced kind",
                [_problem("metadata.namespace", "required for a namespaced kind")],
                kind=cls.KIND,
                name=meta.get("name"),
            )
        if not cls.NAMESPACED:
            meta.pop("namespace", None)
        for server_field in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"):
            meta.pop(server_field, None)
        body.pop("status", None)
        stored = self._validate(cls, body).to_dict()
        smeta = stored["metadata"]
        name, namespace = smeta["name"], smeta.get("namespace")
        with self._write() as conn:
            exists = conn.execute(
                "SELECT 1 FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                (cls.KIND, _ns(namespace), name),
            ).fetchone()
            if exists:
                raise AlreadyExists(
                    f'{cls.PLURAL}.corral.dev "{name}" already exists ({cls.KIND} {self._ref(cls, namespace, name)})',
                    kind=cls.KIND,
                    name=name,
                )
            rv = self._next_rv(conn)
            smeta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(rv),
                generation=1,
                creationTimestamp=_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            self._store_row(conn, cls, stored, rv)
            self._log(conn, rv, "ADDED", stored)
        log.info("Created %s %s", cls.KIND, self._ref(cls, namespace, name))
        return cls.model_validate(stored)

    def _update(self, cls: type[Resource], obj: Resource) -> Resource:
        body = obj.to_dict()
        meta = body.get("metadata", {})
        return self._modify(
            cls,
            meta.get("namespace"),
            meta["name"],
            lambda current: _with_spec_and_metadata(current, body),
            meta.get("resourceVersion"),
        )

    def _patch(
        self,
        cls: type[Resource],
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        resource_version: str | None,
    ) -> Resource:
        patch = {k: v for k, v in patch.items() if k != "status"}
        meta_patch = patch.get("metadata")
        if isinstance(meta_patch, Mapping) and meta_patch.get("resourceVersion") is not None:
            resource_version = str(meta_patch["resourceVersion"])

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            patched = merge_patch(current, patch)
            if not isinstance(patched, dict):
                raise Invalid("a merge patch for an object must be a JSON object", kind=cls.KIND, name=name)
            pmeta = patched.get("metadata")
            if not isinstance(pmeta, dict):
                pmeta = {}
            for fixed in ("name", "namespace"):
                if pmeta.get(fixed) != current["metadata"].get(fixed):
                    raise Invalid(
                        f"{cls.KIND} {name}: metadata.{fixed} cannot be changed",
                        [_problem(f"metadata.{fixed}", "field is immutable")],
                        kind=cls.KIND,
                        name=name,
                    )
            for fixed in ("apiVersion", "kind"):
                patched[fixed] = current[fixed]
            return _with_spec_and_metadata(current, patched)

        return self._modify(cls, namespace, name, apply, resource_version)

    def _patch_status(
        self,
        cls: type[Resource],
        namespace: str | None,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> Resource:

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            new = dict(current)
            patched = merge_patch(current.get("status") or {}, dict(status))
            new["status"] = patched
            return new

        return self._modify(cls, namespace, name, apply, resource_version, status_write=True)

    def _replace_status(self, cls: type[Resource], obj: Resource) -> Resource:
        body = obj.to_dict()
        meta = body.get("metadata", {})

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            new = dict(current)
            new["status"] = body.get("status", {})
            return new

        return self._modify(
            cls, meta.get("namespace"), meta["name"], apply, meta.get("resourceVersion"), status_write=True
        )

    def _delete(self, cls: type[Resource], namespace: str | None, name: str, resource_version: str | None) -> Resource:
        ref = self._ref(cls, namespace, name)
        with self._write() as conn:
            current = self._load(conn, cls, namespace, name)
            meta = current["metadata"]
            _precondition(cls, name, meta, resource_version)
            if meta.get("finalizers") and meta.get("deletionTimestamp"):
                return cls.model_validate(current)  # already deleting: nothing to write
            rv = self._next_rv(conn)
            scope = self._scope(cls, namespace)
            if meta.get("finalizers"):
                meta["deletionTimestamp"] = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
                meta["resourceVersion"] = str(rv)
                self._store_row(conn, cls, current, rv)
                self._log(conn, rv, "MODIFIED", current)
                action = "Marked for deletion"
            else:
                meta["resourceVersion"] = str(rv)
                conn.execute(
                    "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", (cls.KIND, scope, name)
                )
                self._log(conn, rv, "DELETED", current)
                action = "Deleted"
        if action == "Deleted":
            log.info("Deleted %s %s", cls.KIND, ref)
        else:
            log.info("Marked %s %s for deletion (finalizers: %s)", cls.KIND, ref, ", ".join(meta["finalizers"]))
        return cls.model_validate(current)

    def _modify(
        self,
        cls: type[Resource],
        namespace: str | None,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        resource_version: str | None,
        *,
        status_write: bool = False,
    ) -> Resource:
        """Read, change, validate and write one object in one transaction."""
        ref = self._ref(cls, namespace, name)
        with self._write() as conn:
            current = self._load(conn, cls, namespace, name)
            cmeta = current["metadata"]
            _precondition(cls, name, cmeta, resource_version)
            new = change(json.loads(json.dumps(current)))
            new["metadata"] = dict(new.get("metadata") or {})
            for managed in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "name", "namespace"):
                if managed in cmeta:
                    new["metadata"][managed] = cmeta[managed]
                else:
                    new["metadata"].pop(managed, None)
            new["metadata"]["resourceVersion"] = cmeta["resourceVersion"]
            new = self._validate(cls, new).to_dict()
            nmeta = new["metadata"]
            if cmeta.get("deletionTimestamp"):
                added = set(nmeta.get("finalizers", [])) - set(cmeta.get("finalizers", []))
                if added:
                    raise Invalid(
                        f"{cls.KIND} {ref} is being deleted: no new finalizers can be added "
                        f"({', '.join(sorted(added))})",
                        [_problem("metadata.finalizers", "no new finalizers can be added while deleting")],
                        kind=cls.KIND,
                        name=name,
                    )
            if not status_write and _canonical(new.get("spec")) != _canonical(current.get("spec")):
                nmeta["generation"] = int(cmeta.get("generation", 1)) + 1
            if _canonical(new) == _canonical(current):
                return cls.model_validate(current)
            rv = self._next_rv(conn)
            nmeta["resourceVersion"] = str(rv)
            scope = self._scope(cls, namespace)
            if cmeta.get("deletionTimestamp") and not nmeta.get("finalizers"):
                conn.execute(
                    "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", (cls.KIND, scope, name)
                )
                self._log(conn, rv, "DELETED", new)
                action = "Deleted"
            else:
                self._store_row(conn, cls, new, rv)
                self._log(conn, rv, "MODIFIED", new)
                action = "Updated status of" if status_write else "Updated"
        if action == "Updated status of":
            log.debug("%s %s %s", action, cls.KIND, ref)
        else:
            log.info("%s %s %s", action, cls.KIND, ref)
        return cls.model_validate(new)

    # -- watch --------------------------------------------------------------------------

    def _watch(
        self,
        cls: type[Resource],
        namespace: str | None,
        since: str | None,
        selector: LabelSelector,
        timeout: float | None,
    ) -> Watch:
        return _SqliteWatch(self, cls, namespace=namespace, since=since, selector=selector, timeout=timeout)

    # -- events -------------------------------------------------------------------------

    def _record_event(
        self, cls: type[Resource], obj: Resource, type: EventType, reason: str, message: str, *, source: str
    ) -> EventRecord:
        namespace = self._scope(cls, obj.metadata.namespace)
        uid = obj.metadata.uid or ""
        now = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (cls.KIND, namespace, obj.metadata.name, uid, type, reason, message, source)
        with self._write() as conn:
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
            record = self._event(conn.execute(_EVENT_SELECT + " WHERE id = ?", (event_id,)).fetchone())
        log.log(
            logging.WARNING if type == "Warning" else logging.INFO,
            "%s %s %s: %s",
            reason,
            cls.KIND,
            self._ref(cls, obj.metadata.namespace, obj.metadata.name),
            message,
        )
        return record

    def _list_events(self, cls: type[Resource], namespace: str | None, name: str) -> builtins.list[EventRecord]:
        with self._read() as conn:
            rows = conn.execute(
                _EVENT_SELECT + " WHERE kind = ? AND namespace = ? AND name = ? ORDER BY last_timestamp, id",
                (cls.KIND, self._scope(cls, namespace), name),
            ).fetchall()
        return [self._event(row) for row in rows]

    @staticmethod
    def _event(row: tuple[Any, ...]) -> EventRecord:
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

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


_EVENT_SELECT = (
    "SELECT kind, namespace, name, uid, type, reason, message, source, count, first_timestamp, last_timestamp "
    "FROM events"
)


def _problem(path: str, message: str) -> FieldProblem:
    return FieldProblem(path, message, has_value=False)


def _precondition(cls: type[Resource], name: str, meta: Mapping[str, Any], resource_version: str | None) -> None:
    if resource_version is not None and str(resource_version) != meta["resourceVersion"]:
        raise Conflict(
            f'Operation cannot be fulfilled on {cls.PLURAL}.corral.dev "{name}": the object has been modified; '
            f"please apply your changes to the latest version and try again "
            f"(sent resourceVersion {resource_version}, current {meta['resourceVersion']})",
            kind=cls.KIND,
            name=name,
        )


def _with_spec_and_metadata(current: dict[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with spec and user metadata taken from ``incoming``; status untouched."""
    new = dict(current)
    if "spec" in incoming:
        new["spec"] = incoming["spec"]
    else:
        new.pop("spec", None)
    meta = dict(current["metadata"])
    imeta = incoming.get("metadata") or {}
    for key in _USER_METADATA:
        if key in imeta:
            meta[key] = imeta[key]
        else:
            meta.pop(key, None)
    new["metadata"] = meta
    return new


class _SqliteWatch(Watch):
    """A watch on a :class:`SqliteStore`: replays the snapshot (if asked), then tails ``changes``."""

    _BATCH = 256

    def __init__(
        self,
        store: SqliteStore,
        cls: type[Resource],
        *,
        namespace: str | None,
        since: str | None,
        selector: LabelSelector,
        timeout: float | None,
    ) -> None:
        self._store = store
        self._cls = cls
        self._namespace = namespace if cls.NAMESPACED else None
        self._selector = selector
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._stopped = threading.Event()
        self._pending: deque[WatchEvent] = deque()
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
                    [_problem("resourceVersion", "must be a resourceVersion returned by this store")],
                ) from None
            self._check_expired()

    def _check_expired(self) -> None:
        with self._store._read() as conn:
            compacted = conn.execute("SELECT compacted_rv FROM counter WHERE id = 1").fetchone()[0]
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
        with self._store._changed:
            self._store._changed.notify_all()

    def _fetch(self) -> None:
        sql = "SELECT rv, type, body FROM changes WHERE kind = ? AND rv > ?"
        args: list[Any] = [self._cls.KIND, self._last]
        if self._namespace is not None:
            sql += " AND namespace = ?"
            args.append(self._namespace)
        sql += f" ORDER BY rv LIMIT {self._BATCH}"
        with self._store._read() as conn:
            compacted = conn.execute("SELECT compacted_rv FROM counter WHERE id = 1").fetchone()[0]
            rows = conn.execute(sql, args).fetchall()
        if self._last < compacted and (not rows or rows[0][0] > compacted):
            self._check_expired()
        for rv, type_, text in rows:
            self._last = rv
            body = json.loads(text)
            if self._selector.matches(body["metadata"].get("labels")):
                self._pending.append(WatchEvent(type_, self._cls.model_validate(body)))

    def poll(self, timeout: float) -> WatchEvent | None:
        """Return the next event, or ``None`` after ``timeout`` seconds or once done."""
        end = time.monotonic() + timeout
        while True:
            if self._pending:
                return self._pending.popleft()
            if self.done:
                return None
            with self._store._changed:
                seen = self._store._write_seq
            self._fetch()
            if self._pending:
                continue
            remaining = end - time.monotonic()
            if self._deadline is not None:
                remaining = min(remaining, self._deadline - time.monotonic())
            if remaining <= 0:
                return None
            with self._store._changed:
                self._store._changed.wait_for(
                    lambda seen=seen: self._store._write_seq != seen or self._stopped.is_set(),  # type: ignore[misc]
                    min(remaining, self._store.poll_interval),
                )
