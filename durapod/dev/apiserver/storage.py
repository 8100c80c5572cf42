"""The object store: objects by type, one global resourceVersion, the live watchers, the
change history watches resume from, and the list snapshots continue tokens read from.

The history is bounded the way a real cluster's is, by time: kube-apiserver compacts
etcd every five minutes, after which a watch from an older resourceVersion is answered
410 Expired and the client lists again. It is also bounded by memory (a count and a byte
budget), since ``durapod dev`` must stay small under a stream of changes; each change is
kept as its JSON text, which is also what the watch streams send.

Events expire as kube-apiserver's do (``--event-ttl``, one hour): each write of an Event
is stored with that time to live, and once it passes the Event is removed (a DELETED
watch event), by a timer on the event loop and on the next write.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from durapod.dev.apiserver.selectors import Predicate

Obj = dict[str, Any]

#: kube-apiserver's default ``--etcd-compaction-interval``.
HISTORY_SECONDS = 300.0
#: Memory guards on the history, whichever is reached first.
HISTORY_CHANGES = 50_000
HISTORY_BYTES = 32 * 1024 * 1024
#: A watcher this far behind is closed, as the watch cache closes unresponsive watchers;
#: its client watches again from its last resourceVersion (or lists after a 410).
WATCHER_BACKLOG = 1_000
#: List snapshots kept for outstanding continue tokens (the least recently used go).
SNAPSHOTS = 16
#: kube-apiserver's default ``--event-ttl``: how long an Event outlives its last write.
EVENT_TTL_SECONDS = 3600.0
#: The resources stored with the event TTL (the core and events.k8s.io Events).
EXPIRING = ("/events", "events.k8s.io/events")
#: What an entry of the history costs beside its JSON text (the entry, its strings).
_ENTRY_OVERHEAD = 200


def encode(obj: Obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Change:
    rv: int
    key: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    #: ``obj`` as JSON, when the store has it already (every stored change has).
    data: bytes = field(default=b"", compare=False, repr=False)

    def encoded(self) -> bytes:
        return self.data or encode(self.obj)


@dataclass(frozen=True, slots=True)
class Entry:
    """One change in the history: small, and ready to send."""

    rv: int
    key: str
    namespace: str
    type: str
    data: bytes
    at: float

    def change(self) -> Change:
        return Change(self.rv, self.key, self.type, json.loads(self.data), self.data)


@dataclass(eq=False)
class Watcher:
    key: str
    namespace: str | None
    matches: Predicate
    #: Changes up to this resourceVersion are not for this watcher (a watch from a
    #: resourceVersion the store has not reached yet starts there).
    after: int = 0
    #: Changes to send; ``None`` means the store closed this watcher.
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    def wants(self, change: Change) -> bool:
        if change.key != self.key or change.rv <= self.after:
            return False
        if self.namespace and change.obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.matches(change.obj)


@dataclass
class Snapshot:
    """A collection as it was at ``rv``: what the pages after the first one show."""

    key: str
    rv: int
    #: (sort key, object) in storage order; the objects are the stored ones, which the
    #: store never changes in place, so a snapshot costs a reference per object until
    #: the object is replaced.
    items: list[tuple[str, Obj]]
    at: float


def sort_key(obj: Obj) -> str:
    """An object's place in a list: its etcd key below the resource's prefix."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


class Storage:
    """All state of the stand-in; every mutation runs on the event loop, so no locks."""

    def __init__(
        self,
        history_seconds: float = HISTORY_SECONDS,
        history_changes: int = HISTORY_CHANGES,
        history_bytes: int = HISTORY_BYTES,
        event_ttl: float = EVENT_TTL_SECONDS,
    ) -> None:
        self.revision = 1
        #: How long a change stays in the history (settable: tests shorten it).
        self.history_seconds = history_seconds
        self.history_changes = history_changes
        self.history_bytes = history_bytes
        #: The newest resourceVersion the history no longer covers: a watch or a
        #: continue token from before it is answered 410 Expired.
        self.compacted = 0
        #: Watches and continue tokens refused as too old (for tests and diagnostics).
        self.expired_reads = 0
        self._objects: dict[str, dict[str, Obj]] = {}
        self._history: deque[Entry] = deque()
        self._history_size = 0
        self._snapshots: OrderedDict[tuple[str, int], Snapshot] = OrderedDict()
        self.watchers: set[Watcher] = set()
        #: Seconds an Event lives after its last write (settable: tests shorten it).
        self.event_ttl = event_ttl
        #: (deadline, key, place, resourceVersion) of each expiring write, soonest first;
        #: an entry whose object was written again since is stale and skipped.
        self._leases: list[tuple[float, str, str, int]] = []
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None

    # -- objects -----------------------------------------------------------------------

    def get(self, key: str, namespace: str, name: str) -> Obj | None:
        place = f"{namespace}/{name}" if namespace else name
        return self._objects.get(key, {}).get(place)

    def objects(self, key: str, namespace: str | None = None) -> list[Obj]:
        """The objects of one resource (in one namespace), in etcd's key order."""
        items = self._objects.get(key, {})
        return [
            obj
            for _, obj in sorted(items.items())
            if namespace is None or obj["metadata"].get("namespace", "") == namespace
        ]

    def all_keys(self) -> list[str]:
        return list(self._objects)

    def write(self, key: str, obj: Obj, event: str) -> Obj:
        """Store ``obj`` under a new resourceVersion and tell the watchers."""
        self.revision += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.revision)
        place = sort_key(stored)
        self._objects.setdefault(key, {})[place] = stored
        self._publish(key, event, stored)
        if key in EXPIRING:
            now = time.monotonic()
            heapq.heappush(self._leases, (now + self.event_ttl, key, place, self.revision))
        self.expire()
        return stored

    def remove(self, key: str, obj: Obj) -> Obj:
        self._objects.get(key, {}).pop(sort_key(obj), None)
        self.revision += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.revision)
        self._publish(key, "DELETED", gone)
        return gone

    def expire(self) -> None:
        """Remove the Events whose time to live has passed (as etcd ends their lease),
        then set a timer for the next one."""
        now = time.monotonic()
        while self._leases and self._leases[0][0] <= now:
            _, key, place, rv = heapq.heappop(self._leases)
            obj = self._objects.get(key, {}).get(place)
            if obj is not None and obj["metadata"]["resourceVersion"] == str(rv):
                self.remove(key, obj)
        deadline = self._leases[0][0] if self._leases else None
        if self._expiry_timer is not None and self._timer_deadline == deadline:
            return  # the timer set for the soonest lease stands
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if deadline is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a Cluster used directly): the next write sweeps
            self._expiry_timer = loop.call_later(max(deadline - now, 0.0), self._fire)
            self._timer_deadline = deadline

    def _fire(self) -> None:
        self._expiry_timer = None
        self.expire()

    # -- watchers and history ----------------------------------------------------------

    def _publish(self, key: str, event: str, obj: Obj) -> None:
        data = encode(obj)
        change = Change(self.revision, key, event, obj, data)
        now = time.monotonic()
        namespace = obj["metadata"].get("namespace", "")
        self._history.append(Entry(change.rv, key, namespace, event, data, now))
        self._history_size += len(data) + _ENTRY_OVERHEAD
        self._compact(now)
        for watcher in list(self.watchers):
            if watcher.wants(change):
                if watcher.queue.qsize() >= WATCHER_BACKLOG:
                    self.close(watcher)
                else:
                    watcher.queue.put_nowait(change)

    def _compact(self, now: float) -> None:
        """Forget changes past the window or the memory budget, oldest first."""
        horizon = now - self.history_seconds
        history = self._history
        while history and (
            history[0].at <= horizon
            or len(history) > self.history_changes
            or self._history_size > self.history_bytes
        ):
            entry = history.popleft()
            self._history_size -= len(entry.data) + _ENTRY_OVERHEAD
            self.compacted = entry.rv

    def replay(
        self, rv: int, key: str | None = None, namespace: str | None = None
    ) -> list[Entry] | None:
        """The history after ``rv`` (of ``key``, in ``namespace``), or None when it no
        longer reaches back that far. Entries hold JSON: decode them one at a time."""
        self._compact(time.monotonic())
        if rv < self.compacted:
            self.expired_reads += 1
            return None
        return [
            e
            for e in self._history
            if e.rv > rv
            and (key is None or e.key == key)
            and (not namespace or e.namespace == namespace)
        ]

    def changes_since(
        self, rv: int, key: str | None = None, namespace: str | None = None
    ) -> list[Change] | None:
        """The changes after ``rv``, decoded (see :meth:`replay`)."""
        entries = self.replay(rv, key, namespace)
        return None if entries is None else [e.change() for e in entries]

    def close(self, watcher: Watcher) -> None:
        """End a watch stream (its backlog is dropped): the client watches again."""
        self.watchers.discard(watcher)
        watcher.closed = True
        while not watcher.queue.empty():
            watcher.queue.get_nowait()
        watcher.queue.put_nowait(None)

    def close_watchers(self) -> None:
        """End every watch stream, as a restart of the API server would."""
        for watcher in list(self.watchers):
            self.close(watcher)

    # -- list snapshots ----------------------------------------------------------------

    def snapshot(self, key: str) -> Snapshot:
        """The collection as it is now (sorted by key); see :meth:`keep`."""
        found = self._snapshots.get((key, self.revision))
        if found is not None:
            return found
        return Snapshot(key, self.revision, sorted(self._objects.get(key, {}).items()), 0.0)

    def keep(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` for the continue tokens of a paged list (a bounded number,
        least recently used first out)."""
        place = (snapshot.key, snapshot.rv)
        if place not in self._snapshots:
            snapshot.at = time.monotonic()
            self._snapshots[place] = snapshot
            while len(self._snapshots) > SNAPSHOTS:
                self._snapshots.popitem(last=False)
        self._snapshots.move_to_end(place)

    def snapshot_at(self, key: str, rv: int) -> Snapshot | None:
        """The snapshot a continue token names, or None once it has expired (its
        resourceVersion compacted, or older than the history window)."""
        now = time.monotonic()
        self._compact(now)
        for place, snap in list(self._snapshots.items()):
            if snap.rv < self.compacted or snap.at <= now - self.history_seconds:
                del self._snapshots[place]
        found = self._snapshots.get((key, rv))
        if found is None:
            self.expired_reads += 1
        else:
            self._snapshots.move_to_end((key, rv))
        return found
