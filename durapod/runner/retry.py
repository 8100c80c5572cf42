"""The retry policy a task declares, as a plain dataclass with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any


def _duration(delta: timedelta) -> str:
    return f"{delta.total_seconds():g}s"


@dataclass(frozen=True)
class Retry:
    """How task errors are retried. Evictions resume without spending an attempt."""

    #: Attempts in all, the first included (1 = never retry).
    max_attempts: int = 3
    #: Delay before the first retry.
    min_delay: timedelta = timedelta(seconds=1)
    #: Longest delay between attempts.
    max_delay: timedelta = timedelta(minutes=5)
    #: Each retry waits ``factor`` times longer than the one before.
    factor: float = 2.0
    #: Spread delays randomly (between half and all of the computed delay).
    jitter: bool = True
    #: Exception type names that fail the run at once.
    non_retryable: tuple[str, ...] = field(default_factory=tuple)
    #: Retry an OOM-killed attempt on the next larger machine preset.
    upgrade_machine_on_oom: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if self.min_delay > self.max_delay:
            raise ValueError("min_delay must not exceed max_delay")

    def to_spec(self) -> dict[str, Any]:
        """The ``spec.retry`` of a TaskDefinition."""
        spec: dict[str, Any] = {
            "maxAttempts": self.max_attempts,
            "minDelay": _duration(self.min_delay),
            "maxDelay": _duration(self.max_delay),
            "factor": self.factor,
            "jitter": self.jitter,
            "nonRetryableErrors": list(self.non_retryable),
        }
        if self.upgrade_machine_on_oom:
            spec["onOOM"] = {"upgradeMachine": True}
        return spec
