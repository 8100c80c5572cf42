"""The one timestamp format durapod writes: RFC 3339 in UTC with microseconds.

Kubernetes' own ``metav1.Time`` has whole seconds; ours keep microseconds so that two
transitions (or Events) in the same second keep their order. Parsing accepts both.
"""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(when: datetime) -> str:
    """``2026-01-02T03:04:05.123456Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(stamp: str) -> datetime:
    """An RFC 3339 stamp (``Z`` or an offset, with or without fractions) as aware UTC."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_stamp() -> str:
    return format_time(utcnow())
