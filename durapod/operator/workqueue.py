"""A work queue of keys, like client-go's: nothing handed to it is ever dropped.

Every event, timer and resync only adds a key; workers take keys one at a time, and a key
is never handled by two workers at once (an add while it is handled runs it again after).
A handler that fails for any reason is retried with exponential backoff and jitter, until
it succeeds; timers are delayed adds, and only the earliest pending one per key is kept.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from durapod import store

log = logging.getLogger("durapod.operator.workqueue")
K = TypeVar("K", bound=Hashable)


@dataclass
class Backoff:
    #: First retry delay, in seconds; it doubles per failure up to ``max``.
    base: float = 0.1
    max: float = 30.0

    def delay(self, failures: int) -> float:
        delay: float = min(self.base * 2.0 ** min(failures - 1, 30), self.max)
        return delay * random.uniform(0.5, 1.0)


@dataclass
class WorkQueue(Generic[K]):
    handler: Callable[[K], Awaitable[None]]
    workers: int = 8
    backoff: Backoff = field(default_factory=Backoff)
    #: Failures expected to pass (logged in a line, without a traceback).
    transient: Callable[[Exception], bool] = lambda exc: isinstance(exc, store.UNAVAILABLE)
    _ready: asyncio.Queue[K] = field(init=False, default_factory=asyncio.Queue)
    _queued: set[K] = field(init=False, default_factory=set)
    _active: set[K] = field(init=False, default_factory=set)
    _again: set[K] = field(init=False, default_factory=set)
    _failures: dict[K, int] = field(init=False, default_factory=dict)
    _timers: dict[K, tuple[float, asyncio.TimerHandle]] = field(init=False, default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"worker {n}") for n in range(self.workers)
        ]

    async def run(self) -> None:
        """Work until cancelled, for a caller that holds the task."""
        self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, timer in self._timers.values():
            timer.cancel()

    def add(self, key: K) -> None:
        """Handle ``key`` soon (once, however often it is added before then)."""
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: K, seconds: float) -> None:
        """Handle ``key`` after ``seconds``; an earlier pending timer for it wins."""
        loop = asyncio.get_running_loop()
        due = loop.time() + max(seconds, 0.0)
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    @property
    def depth(self) -> int:
        """Keys waiting for a worker (not those being handled, nor timers)."""
        return len(self._queued)

    @property
    def idle(self) -> bool:
        return not (self._queued or self._active)

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self.handler(key)
            except Exception as exc:
                self._again.discard(key)  # the backoff's timer brings it back, not at once
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = self.backoff.delay(failures)
                if self.transient(exc):
                    log.warning("%s: %s; retry in %.2fs", key, exc, delay)
                else:
                    log.exception("%s failed (%d in a row); retry in %.2fs", key, failures, delay)
                self.add_after(key, delay)
            else:
                self._failures.pop(key, None)
            finally:
                self._active.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
