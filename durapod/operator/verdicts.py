"""Pure decisions: how a pod ended, and when (and on what machine) a run tries again.

Kept free of I/O so each rule is tested on its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from durapod.resources.models import Machine
from durapod.runner.retry import Retry

Obj = dict[str, Any]


class Outcome(StrEnum):
    SUCCEEDED = "Succeeded"
    SUSPENDED = "Suspended"
    TASK_ERROR = "TaskError"
    CRASHED = "Crashed"
    EVICTED = "Evicted"
    OOM_KILLED = "OOMKilled"
    TIMED_OUT = "TimedOut"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    #: The error to record (task errors, crashes, OOM), else None.
    error: Obj | None = None
    #: Why, for Events and messages.
    detail: str = ""


def _terminated(pod: Obj) -> Obj:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    state: Obj = (statuses[0].get("state") or {}).get("terminated") or {}
    return state


def disrupted(pod: Obj) -> str | None:
    """Why the pod was disrupted (evicted, preempted, deleted), or None."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return str(condition.get("reason") or "DisruptionTarget")
    if status.get("reason") == "Evicted":
        return "Evicted"
    if pod["metadata"].get("deletionTimestamp"):
        return "PodDeleted"
    return None


def judge(pod: Obj, deleted: bool, reported: Obj) -> Verdict | None:
    """How the pod ended, or None while it has not.

    ``reported`` holds what its runner reported: ``output``, ``error`` or ``suspend``.
    """
    phase = (pod.get("status") or {}).get("phase")
    name = pod["metadata"]["name"]
    if phase not in ("Succeeded", "Failed") and not deleted:
        return None
    if reported.get("suspend") is not None:
        return Verdict(Outcome.SUSPENDED, detail=f"pod {name} exited to wait")
    if phase == "Succeeded" or reported.get("output") is not None:
        return Verdict(Outcome.SUCCEEDED)
    terminated = _terminated(pod)
    code = terminated.get("exitCode")
    if terminated.get("reason") == "OOMKilled":
        message = f"pod {name} was OOM-killed (exit code {code})"
        return Verdict(Outcome.OOM_KILLED, _error("OOMKilled", message), message)
    if (pod.get("status") or {}).get("reason") == "DeadlineExceeded":
        return Verdict(Outcome.TIMED_OUT, detail=f"pod {name} ran past the run's maxDuration")
    if (why := disrupted(pod)) or deleted:
        return Verdict(Outcome.EVICTED, detail=f"pod {name}: {why or 'PodDeleted'}")
    if reported.get("error") is not None:
        error: Obj = reported["error"]
        return Verdict(Outcome.TASK_ERROR, error, f"{error['type']}: {error['message']}")
    message = f"pod {name} exited with code {code} without reporting an outcome"
    return Verdict(Outcome.CRASHED, _error("Crashed", message), message)


def _error(kind: str, message: str) -> Obj:
    return {"type": kind, "reason": kind, "message": message, "retryable": True}


def retry_delay(policy: Retry, attempt: int, error: Obj | None) -> timedelta | None:
    """The delay before attempt ``attempt + 1``, or None when the run must fail now.

    The backoff is ``minDelay * factor ** (attempt - 1)``, capped at ``maxDelay``. Jitter
    works as Trigger.dev's ``randomize``: it only lengthens a delay, by up to 2x, and the
    result is capped at ``maxDelay`` again, so a delay always stays within
    [minDelay, maxDelay] (were ``maxDelay`` below ``minDelay``, ``maxDelay`` wins).
    A ``retryAfter`` from the task (``raise RetryAfter(...)``) overrides the policy, unjittered.
    """
    error = error or {}
    if not error.get("retryable", True) or error.get("type") in policy.non_retryable_errors:
        return None
    if attempt >= policy.max_attempts:
        return None
    if error.get("retryAfter") is not None:
        return timedelta(seconds=float(error["retryAfter"]))
    low = policy.min_delay.total_seconds()
    high = policy.max_delay.total_seconds()
    try:  # in float seconds: a timedelta overflows long before a float does
        seconds = min(high, low * policy.factor ** max(attempt - 1, 0))
    except OverflowError:
        seconds = high
    if policy.jitter:
        seconds = min(high, seconds * random.uniform(1.0, 2.0))
    return timedelta(seconds=seconds)


def next_machine(current: str) -> str:
    """The next larger machine preset (the largest stays)."""
    order = list(Machine)
    index = order.index(Machine(current))
    return order[min(index + 1, len(order) - 1)].value


#: Container waiting reasons of a pod that cannot start until something changes.
_CANNOT_START = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def not_starting(pod: Obj) -> tuple[str, str] | None:
    """Why a pending pod cannot start (reason, message): unschedulable, or its image or
    container config is wrong; None while it is on its way (or already started)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return None
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return "Unschedulable", str(condition.get("message") or "no node can hold the pod")
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _CANNOT_START:
            return str(waiting["reason"]), str(waiting.get("message") or waiting["reason"])
    return None
