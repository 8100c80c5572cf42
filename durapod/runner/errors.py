"""Errors a task raises to steer its run, and the ones the SDK raises, under one root.

::

    DurapodError                 every error durapod raises (catch this one to catch all)
    ├── NonRetryableError        no retry can fix it: the run fails now, whatever the policy
    │   ├── AbortRun             the task decides to fail the run
    │   ├── InvalidPayloadError  the payload does not match the task's payload type
    │   ├── DuplicateStepError, CheckpointTooLargeError, NotSerializableError
    │   └── ChildRunFailedError  a child run awaited with ``trigger_and_wait`` failed
    ├── RetryAfter               retry after the delay the task names (not the policy's)
    └── ApiError                 the durapod API refused a call (``status``, ``detail``)

Any other exception a task raises is retried per its ``Retry`` policy. Class names travel
in ``status.error.type``; the operator reads the retry semantics from the report
(``retryable``, ``retryAfter``), not from these classes, so user images need nothing more.
:class:`Suspend` is not an error: it is how a durable wait unwinds the task.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durapod.durations import parse_duration


class DurapodError(Exception):
    """The root of every error durapod raises."""


class NonRetryableError(DurapodError):
    """An error no retry can fix: the run fails at once, whatever its retry policy.

    Raise it (or a subclass) from a task; the SDK's own misuse errors derive from it too.
    """


class AbortRun(NonRetryableError):
    """Fail the run now: no retry, whatever the policy says."""


class RetryAfter(DurapodError):
    """Retry this attempt after ``delay`` (the task decides the backoff)."""

    def __init__(self, delay: timedelta | str | float, message: str = "") -> None:
        if isinstance(delay, str):
            delay = parse_duration(delay)
        elif not isinstance(delay, timedelta):
            delay = timedelta(seconds=delay)
        self.delay = delay
        super().__init__(message or f"retry after {delay.total_seconds():g}s")


class InvalidPayloadError(NonRetryableError):
    """The payload does not match the task's payload type."""


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


class ApiError(DurapodError):
    """The durapod API refused a call: ``status`` is the HTTP status, ``detail`` its reason.

    Raised by the runner's calls and by :mod:`durapod.client` (whose typed errors,
    ``NotFound``, ``Unavailable``..., derive from it).
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"durapod API answered {status}: {detail}")
        self.status = status
        self.detail = detail


class Suspend(BaseException):
    """Unwinds the task so its pod can exit while the run waits (sleep, child run).

    A BaseException, so a task's ``except Exception`` cannot swallow it (for the same
    reason it is not a :class:`DurapodError`).
    """

    def __init__(self, until: str | None = None, child: str | None = None) -> None:
        super().__init__(until or child)
        self.until = until
        self.child = child

    def report(self) -> dict[str, Any]:
        return {"until": self.until} if self.until else {"child": self.child}
