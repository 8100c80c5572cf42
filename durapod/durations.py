"""Durations as users write them in manifests ("250ms", "10s", "1h30m", "2d").

Kept in the light SDK: the runner, the operator and the API all parse the same strings.
"""

from __future__ import annotations

import re
from datetime import timedelta

#: The pattern the CRD schema enforces, so a bad duration is refused by the API server.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """Parse "1h30m" into a timedelta; raise ValueError naming the bad text."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 250ms, 10s, 5m, 1h30m or 2d")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


_UNITS = (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000))


def duration_string(delta: timedelta) -> str:
    """The exact manifest form of a timedelta ("5m", "1h30m", "1s500ms", "0s"), which
    :func:`parse_duration` reads back; raise ValueError for a negative one."""
    micros = delta // timedelta(microseconds=1)
    if micros < 0:
        raise ValueError(f"a duration cannot be negative: {delta}")
    parts = []
    for unit, size in _UNITS:
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        parts.append(f"{micros / 1000:f}".rstrip("0").rstrip(".") + "ms")
    return "".join(parts) or "0s"


def format_duration(delta: timedelta) -> str:
    """Render a timedelta compactly for people: 850ms, 12.3s, 4m5s, 2h3m."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m"
