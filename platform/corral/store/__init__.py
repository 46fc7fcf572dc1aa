"""Where Corral's resources live: one :class:`Store` protocol, a SQLite implementation for the
embedded default (the Kubernetes one comes with the operator), label selectors and errors.

Example:
    >>> from corral.store import SqliteStore
    >>> store = SqliteStore(":memory:")
    >>> store.list("Model").items
    []
"""

from ._errors import (
    MAX_OBJECT_BYTES,
    AlreadyExists,
    Conflict,
    Expired,
    Forbidden,
    Invalid,
    NotFound,
    StoreError,
    TooLarge,
)
from ._mergepatch import merge_patch
from ._protocol import EventRecord, ResourceList, Store, Watch, WatchEvent, resolve_kind
from ._selectors import LabelSelector, Requirement, SelectorError, parse_selector
from ._sqlite import SqliteStore

__all__ = [
    "MAX_OBJECT_BYTES",
    "AlreadyExists",
    "Conflict",
    "EventRecord",
    "Expired",
    "Forbidden",
    "Invalid",
    "LabelSelector",
    "NotFound",
    "Requirement",
    "ResourceList",
    "SelectorError",
    "SqliteStore",
    "Store",
    "StoreError",
    "TooLarge",
    "Watch",
    "WatchEvent",
    "merge_patch",
    "parse_selector",
    "resolve_kind",
]
