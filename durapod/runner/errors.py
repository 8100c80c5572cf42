"""Errors a task raises to steer its run, and the ones the SDK raises for misuse.

Their class names travel in ``status.error.type``; the operator reads the retry
semantics from the report, not from these classes, so user images need nothing more.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durapod.durations import parse_duration


class AbortRun(Exception):
    """Fail the run now: no retry, whatever the policy says."""


class RetryAfter(Exception):
    """Retry this attempt after ``delay`` (the task decides the backoff)."""

    def __init__(self, delay: timedelta | str | float, message: str = "") -> None:
        if isinstance(delay, str):
            delay = parse_duration(delay)
        elif not isinstance(delay, timedelta):
            delay = timedelta(seconds=delay)
        self.delay = delay
        super().__init__(message or f"retry after {delay.total_seconds():g}s")


class NonRetryableError(Exception):
    """Base of the SDK's own errors that no retry can fix."""


class DuplicateStepError(NonRetryableError):
    """Two steps of one run used the same name."""


class CheckpointTooLargeError(NonRetryableError):
    """A step's output is over the TaskDefinition's checkpoint size limit."""


class NotSerializableError(NonRetryableError):
    """A step's output (or the task's) is not JSON."""


class ChildRunFailedError(NonRetryableError):
    """A child run awaited with ``trigger_and_wait`` ended without success.

    Not retryable by default: the child's outcome is checkpointed, so a new attempt of
    the parent would replay the same failure and only spend the parent's attempts (the
    child had its own retry policy). ``child`` names the child run, ``error`` is its
    ``status.error``.

    To retry anyway, catch it, wait on a fresh child and raise a retryable error
    (``RetryAfter`` or any exception that is not an ``AbortRun`` or SDK error)::

        try:
            return await ctx.trigger_and_wait("resize", payload, key=f"resize-{ctx.attempt}")
        except ChildRunFailedError as exc:
            raise RuntimeError(f"resize failed: {exc}") from exc

    The ``key`` naming the attempt makes the next attempt start a new child instead of
    replaying this one's failure.
    """

    def __init__(self, child: str, error: dict[str, Any]) -> None:
        self.child = child
        self.error = error
        super().__init__(f"child run {child} failed: {error.get('type')}: {error.get('message')}")


class Suspend(BaseException):
    """Unwinds the task so its pod can exit while the run waits (sleep, child run).

    A BaseException, so a task's ``except Exception`` cannot swallow it.
    """

    def __init__(self, until: str | None = None, child: str | None = None) -> None:
        super().__init__(until or child)
        self.until = until
        self.child = child

    def report(self) -> dict[str, Any]:
        return {"until": self.until} if self.until else {"child": self.child}
