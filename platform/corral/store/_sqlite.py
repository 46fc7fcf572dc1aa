"""The embedded store: every resource in one SQLite file.

:class:`SqliteStore` is its own API server: it sets uid, resourceVersion, generation and
timestamps, checks resourceVersion preconditions (optimistic concurrency), applies the
finalizer rules and validates every object before writing it. Each write is one
transaction on :class:`~corral.store._sqlite_db.SqliteDatabase` (object row, watch-log row
and counter together); watches tail that log (:mod:`corral.store._sqlite_watch`) and
events live in their own table (:mod:`corral.store._sqlite_events`).
"""

from __future__ import annotations

import builtins
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from corral.api.v1alpha1 import Resource

from ._errors import MAX_OBJECT_BYTES, AlreadyExists, Invalid, NotFound, TooLarge
from ._mergepatch import merge_patch
from ._objects import (
    canonical,
    creatable_body,
    field_problem,
    precondition,
    timestamp,
    validate,
    with_spec_and_metadata,
)
from ._protocol import EventRecord, EventType, ResourceList, Store, Watch
from ._selectors import LabelSelector
from ._sqlite_db import SqliteDatabase
from ._sqlite_events import list_events, record_event
from ._sqlite_watch import SqliteWatch, log_change

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)

_MANAGED_METADATA = ("uid", "creationTimestamp", "deletionTimestamp", "generation", "name", "namespace")
"""Metadata no write through the store may change (resourceVersion is set by the write itself)."""


class SqliteStore(Store):
    """The embedded store: one SQLite file (or ``":memory:"`` for a private, single-instance store).

    A second :class:`SqliteStore` on the same file (another thread or process) sees every
    write of the first.

    Args:
        path: The database file; parent directories are created.
        history: How many changes the watch log keeps; a watch resuming from before them
            gets :class:`~corral.store.Expired`.
        poll_interval: How often a watch looks for writes made through another connection
            (writes through this instance wake it at once).
    """

    def __init__(self, path: str | Path, *, history: int = 10_000, poll_interval: float = 0.25) -> None:
        self.path = str(path)
        self.history = history
        self.poll_interval = poll_interval
        self._db = SqliteDatabase(self.path, history=history)

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _scope(rc: type[Resource], namespace: str | None) -> str:
        """The ``namespace`` column of an object: ``""`` for a cluster-scoped kind."""
        return (namespace or "") if rc.NAMESPACED else ""

    @staticmethod
    def _ref(rc: type[Resource], namespace: str | None, name: str) -> str:
        return f"{namespace}/{name}" if rc.NAMESPACED else name

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
    def _store_row(conn: sqlite3.Connection, cls: type[Resource], body: dict[str, Any], rv: int) -> None:
        meta = body["metadata"]
        text = canonical(body)
        if len(text) > MAX_OBJECT_BYTES:  # the transaction rolls back: nothing is written
            raise TooLarge(
                f"{cls.KIND} {meta['name']} is {len(text)} bytes; an object may be at most {MAX_OBJECT_BYTES} bytes "
                "(keep large data in artifacts, not in annotations or labels)",
                kind=cls.KIND,
                name=meta["name"],
            )
        conn.execute(
            "INSERT OR REPLACE INTO objects (kind, namespace, name, uid, rv, body) VALUES (?, ?, ?, ?, ?, ?)",
            (cls.KIND, meta.get("namespace") or "", meta["name"], meta["uid"], rv, text),
        )

    @staticmethod
    def _delete_row(conn: sqlite3.Connection, cls: type[Resource], scope: str, name: str) -> None:
        conn.execute("DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", (cls.KIND, scope, name))

    # -- reads --------------------------------------------------------------------------

    def _get(self, cls: type[Resource], namespace: str | None, name: str) -> Resource:
        with self._db.read() as conn:
            body = self._load(conn, cls, namespace, name)
        return cls.model_validate(body)

    def _list(self, cls: type[Resource], namespace: str | None, selector: LabelSelector) -> ResourceList[Any]:
        sql = "SELECT body FROM objects WHERE kind = ?"
        args: list[Any] = [cls.KIND]
        if namespace is not None and cls.NAMESPACED:
            sql += " AND namespace = ?"
            args.append(namespace)
        sql += " ORDER BY namespace, name"
        with self._db.read() as conn:
            rows = conn.execute(sql, args).fetchall()
            rv = self._db.current_rv(conn)
        items = []
        for (text,) in rows:
            body = json.loads(text)
            if selector.matches(body["metadata"].get("labels")):
                items.append(cls.model_validate(body))
        return ResourceList(cls.KIND, items, str(rv))

    def resource_version(self) -> str:
        """The newest resourceVersion written to this file."""
        with self._db.read() as conn:
            return str(self._db.current_rv(conn))

    def ping(self) -> None:
        """Run a trivial query (readiness)."""
        self._db.ping()

    # -- writes -------------------------------------------------------------------------

    def _create(self, cls: type[Resource], obj: Resource) -> Resource:
        stored = creatable_body(cls, obj)
        smeta = stored["metadata"]
        name, namespace = smeta["name"], smeta.get("namespace")
        with self._db.write() as conn:
            exists = conn.execute(
                "SELECT 1 FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                (cls.KIND, namespace or "", name),
            ).fetchone()
            if exists:
                raise AlreadyExists(
                    f'{cls.PLURAL}.corral.dev "{name}" already exists ({cls.KIND} {self._ref(cls, namespace, name)})',
                    kind=cls.KIND,
                    name=name,
                )
            rv = self._db.next_rv(conn)
            smeta.update(uid=str(uuid.uuid4()), resourceVersion=str(rv), generation=1, creationTimestamp=timestamp())
            self._store_row(conn, cls, stored, rv)
            log_change(conn, rv, "ADDED", stored)
        log.info("Created %s %s", cls.KIND, self._ref(cls, namespace, name))
        return cls.model_validate(stored)

    def _update(self, cls: type[Resource], obj: Resource) -> Resource:
        body = obj.to_dict()
        meta = body.get("metadata", {})
        return self._modify(
            cls,
            meta.get("namespace"),
            meta["name"],
            lambda current: with_spec_and_metadata(current, body),
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
                        [field_problem(f"metadata.{fixed}", "field is immutable")],
                        kind=cls.KIND,
                        name=name,
                    )
            for fixed in ("apiVersion", "kind"):
                patched[fixed] = current[fixed]
            return with_spec_and_metadata(current, patched)

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
            return {**current, "status": merge_patch(current.get("status") or {}, dict(status))}

        return self._modify(cls, namespace, name, apply, resource_version, status_write=True)

    def _replace_status(self, cls: type[Resource], obj: Resource) -> Resource:
        body = obj.to_dict()
        meta = body.get("metadata", {})

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            return {**current, "status": body.get("status", {})}

        return self._modify(
            cls, meta.get("namespace"), meta["name"], apply, meta.get("resourceVersion"), status_write=True
        )

    def _delete(self, cls: type[Resource], namespace: str | None, name: str, resource_version: str | None) -> Resource:
        ref = self._ref(cls, namespace, name)
        with self._db.write() as conn:
            current = self._load(conn, cls, namespace, name)
            meta = current["metadata"]
            precondition(cls, name, meta, resource_version)
            if meta.get("finalizers") and meta.get("deletionTimestamp"):
                return cls.model_validate(current)  # already deleting: nothing to write
            rv = self._db.next_rv(conn)
            meta["resourceVersion"] = str(rv)
            if meta.get("finalizers"):
                meta["deletionTimestamp"] = timestamp()
                self._store_row(conn, cls, current, rv)
                log_change(conn, rv, "MODIFIED", current)
            else:
                self._delete_row(conn, cls, self._scope(cls, namespace), name)
                log_change(conn, rv, "DELETED", current)
        if meta.get("finalizers"):
            log.info("Marked %s %s for deletion (finalizers: %s)", cls.KIND, ref, ", ".join(meta["finalizers"]))
        else:
            log.info("Deleted %s %s", cls.KIND, ref)
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
        with self._db.write() as conn:
            current = self._load(conn, cls, namespace, name)
            cmeta = current["metadata"]
            precondition(cls, name, cmeta, resource_version)
            new = change(json.loads(json.dumps(current)))
            new["metadata"] = dict(new.get("metadata") or {})
            for managed in _MANAGED_METADATA:
                if managed in cmeta:
                    new["metadata"][managed] = cmeta[managed]
                else:
                    new["metadata"].pop(managed, None)
            new["metadata"]["resourceVersion"] = cmeta["resourceVersion"]
            new = validate(cls, new).to_dict()
            nmeta = new["metadata"]
            if cmeta.get("deletionTimestamp"):
                added = set(nmeta.get("finalizers", [])) - set(cmeta.get("finalizers", []))
                if added:
                    raise Invalid(
                        f"{cls.KIND} {ref} is being deleted: no new finalizers can be added "
                        f"({', '.join(sorted(added))})",
                        [field_problem("metadata.finalizers", "no new finalizers can be added while deleting")],
                        kind=cls.KIND,
                        name=name,
                    )
            if not status_write and canonical(new.get("spec")) != canonical(current.get("spec")):
                nmeta["generation"] = int(cmeta.get("generation", 1)) + 1
            if canonical(new) == canonical(current):
                return cls.model_validate(current)
            rv = self._db.next_rv(conn)
            nmeta["resourceVersion"] = str(rv)
            if cmeta.get("deletionTimestamp") and not nmeta.get("finalizers"):
                self._delete_row(conn, cls, self._scope(cls, namespace), name)
                log_change(conn, rv, "DELETED", new)
                action = "Deleted"
            else:
                self._store_row(conn, cls, new, rv)
                log_change(conn, rv, "MODIFIED", new)
                action = "Updated status of" if status_write else "Updated"
        log.log(logging.DEBUG if action == "Updated status of" else logging.INFO, "%s %s %s", action, cls.KIND, ref)
        return cls.model_validate(new)

    # -- watch and events ---------------------------------------------------------------

    def _watch(
        self,
        cls: type[Resource],
        namespace: str | None,
        since: str | None,
        selector: LabelSelector,
        timeout: float | None,
    ) -> Watch:
        return SqliteWatch(
            self,
            self._db,
            cls,
            namespace=namespace,
            since=since,
            selector=selector,
            timeout=timeout,
            poll_interval=self.poll_interval,
        )

    def _record_event(
        self, cls: type[Resource], obj: Resource, type: EventType, reason: str, message: str, *, source: str
    ) -> EventRecord:
        namespace = self._scope(cls, obj.metadata.namespace)
        key = (cls.KIND, namespace, obj.metadata.name, obj.metadata.uid or "", type, reason, message, source)
        with self._db.write() as conn:
            record = record_event(conn, key, timestamp())
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
        with self._db.read() as conn:
            return list_events(conn, cls.KIND, self._scope(cls, namespace), name)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
