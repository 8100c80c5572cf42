"""A running container as the subprocess kubelet keeps it, and how it is signalled.

Each container is a process group (its process starts a session of its own), so a
signal reaches whatever the container's command started too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from durapod.dev import probes
from durapod.dev.apiserver import pods

Obj = dict[str, Any]


@dataclass(eq=False)
class Container:
    """One running pod process and what the node knows about it."""

    namespace: str
    name: str
    uid: str
    process: asyncio.subprocess.Process
    started_at: str
    memory_limit: int | None
    killed_for: str | None = None  # OOMKilled | Evicted | Deleted | DeadlineExceeded | Unhealthy
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: How often the container was restarted before this run, and how the last run ended.
    restart_count: int = 0
    last_state: Obj = field(default_factory=dict)
    #: The run's probes; the exit status once it ended.
    prober: probes.Prober | None = None
    code: int | None = None
    #: Set while the container waits out its crash back-off, to end the wait early.
    wake: asyncio.Event | None = None
    #: Held while a status is made and written: the last write has the latest state.
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Where its probes and hooks go; whether it is being stopped already.
    target: probes.Target | None = None
    stopping: bool = False


def kill(c: Container, sig: signal.Signals) -> None:
    """Signal the container's whole process group (gone already is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(c.process.pid, sig)


def memory_bytes(limit: Any) -> int | None:
    """A memory limit in bytes (None: no limit, or one the API server would refuse)."""
    amount = pods.quantity(limit) if limit is not None else None
    return math.ceil(amount) if amount else None
