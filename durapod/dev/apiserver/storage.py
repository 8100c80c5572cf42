"""The object store: objects by type, one global resourceVersion, a bounded change
history for watches from a resourceVersion, and the live watchers."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from durapod.dev.apiserver.selectors import Predicate

Obj = dict[str, Any]


@dataclass(frozen=True)
class Change:
    rv: int
    key: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj


@dataclass(eq=False)
class Watcher:
    key: str
    namespace: str | None
    matches: Predicate
    queue: asyncio.Queue[Change] = field(default_factory=asyncio.Queue)

    def wants(self, change: Change) -> bool:
        if change.key != self.key:
            return False
        if self.namespace and change.obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.matches(change.obj)


class Storage:
    """All state of the stand-in; every mutation runs on the event loop, so no locks."""

    def __init__(self, history: int = 100_000) -> None:
        self.revision = 1
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self.history: deque[Change] = deque(maxlen=history)
        self.watchers: set[Watcher] = set()

    def get(self, key: str, namespace: str, name: str) -> Obj | None:
        return self._objects.get(key, {}).get((namespace, name))

    def objects(self, key: str, namespace: str | None = None) -> list[Obj]:
        items = self._objects.get(key, {})
        return [obj for (ns, _), obj in sorted(items.items()) if namespace in (None, ns)]

    def all_keys(self) -> list[str]:
        return list(self._objects)

    def write(self, key: str, obj: Obj, event: str) -> Obj:
        """Store ``obj`` under a new resourceVersion and tell the watchers."""
        self.revision += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.revision)
        meta = stored["metadata"]
        self._objects.setdefault(key, {})[(meta.get("namespace", ""), meta["name"])] = stored
        self._publish(Change(self.revision, key, event, stored))
        return stored

    def remove(self, key: str, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self._objects.get(key, {}).pop((meta.get("namespace", ""), meta["name"]), None)
        self.revision += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.revision)
        self._publish(Change(self.revision, key, "DELETED", gone))
        return gone

    def _publish(self, change: Change) -> None:
        self.history.append(change)
        for watcher in self.watchers:
            if watcher.wants(change):
                watcher.queue.put_nowait(change)

    def changes_since(self, rv: int) -> list[Change] | None:
        """Changes after ``rv``, or None when the history no longer reaches back that far."""
        if (
            self.history
            and self.history[0].rv > rv + 1
            and len(self.history) == self.history.maxlen
        ):
            return None
        return [c for c in self.history if c.rv > rv]
