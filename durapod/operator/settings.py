"""Operator settings, read from the environment the chart or ``durapod dev`` sets."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    #: PostgreSQL DSN.
    database_url: str
    #: The API's URL as task pods reach it.
    api_url: str
    #: How long a TaskRun naming an unknown TaskDefinition waits for it before failing.
    unknown_task_grace_seconds: float = 10.0
    #: How often (on average; jittered by a quarter) every unfinished run, queue and
    #: schedule is reconciled again, whatever events were missed.
    resync_seconds: float = 45.0
    #: ``status.lastCheckpoint`` is written at most once per run per this many seconds.
    checkpoint_status_interval: float = 1.0
    #: Keys reconciled at once.
    workers: int = 8
    #: The namespaces served (``DURAPOD_WATCH_NAMESPACES``, comma-separated); empty: all.
    watch_namespaces: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> Settings:
        names = ("DATABASE_URL", "DURAPOD_API_URL")
        if missing := [n for n in names if not os.environ.get(n)]:
            raise SystemExit(
                f"durapod operator: missing environment variable(s): {', '.join(missing)}"
            )
        return cls(
            os.environ["DATABASE_URL"],
            os.environ["DURAPOD_API_URL"],
            float(os.environ.get("DURAPOD_UNKNOWN_TASK_GRACE_SECONDS", "10")),
            float(os.environ.get("DURAPOD_RESYNC_SECONDS", "45")),
            float(os.environ.get("DURAPOD_CHECKPOINT_STATUS_INTERVAL", "1")),
            int(os.environ.get("DURAPOD_OPERATOR_WORKERS", "8")),
            watch_namespaces(),
        )


def watch_namespaces() -> tuple[str, ...]:
    """The namespaces in ``DURAPOD_WATCH_NAMESPACES`` (comma-separated names, not kopf's
    glob patterns, so the operator's Roles can be made for each); empty: the whole cluster."""
    raw = os.environ.get("DURAPOD_WATCH_NAMESPACES", "")
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if bad := [n for n in names if any(c in n for c in "*?!")]:
        raise SystemExit(
            f"durapod operator: DURAPOD_WATCH_NAMESPACES takes namespace names, not patterns: "
            f"{', '.join(bad)}"
        )
    return names
