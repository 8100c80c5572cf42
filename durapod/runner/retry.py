"""The retry policy: one type for the SDK, the TaskDefinition's ``spec.retry`` and the operator.

A plain dataclass with documented defaults; :mod:`durapod.runner.wire` lets the resource
models use this very class (camelCase on the wire, durations as ``"1m30s"``), so
``@task(retry=Retry(...))``, the generated CRD schema and ``verdicts.retry_delay`` cannot
drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from durapod.runner import wire
from durapod.runner.wire import Duration


@dataclass(frozen=True)
class OnOOM:
    """What an OOM-killed attempt does beside spending an attempt."""

    __pydantic_config__: ClassVar[dict[str, Any]] = wire.config()

    upgrade_machine: bool = False
    """Retry an OOM-killed attempt on the next larger machine."""


@dataclass(frozen=True)
class Retry:
    """How task errors are retried (evictions are resumes and spend no attempt)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = wire.config(on_oom="onOOM")

    max_attempts: int = field(default=3, metadata=wire.limits(minimum=1, maximum=100))
    """Attempts in all, the first included (1: never retry)."""
    min_delay: Duration = timedelta(seconds=1)
    """The delay before the first retry."""
    max_delay: Duration = timedelta(minutes=5)
    """The longest delay between attempts (below the minimum delay, it wins)."""
    factor: float = field(default=2.0, metadata=wire.limits(minimum=1.0, maximum=10.0))
    """Each retry waits this many times longer than the one before."""
    jitter: bool = True
    """Lengthen each delay by a random factor of 1 to 2, still capped at the maximum."""
    non_retryable_errors: tuple[str, ...] = field(default_factory=tuple)
    """Exception type names that fail the run at once."""
    on_oom: OnOOM | None = None
    """What an OOM-killed attempt does."""

    def __post_init__(self) -> None:
        wire.check(self)
