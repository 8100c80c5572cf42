"""The operator's pure decisions: how a pod ended, retry delays, machine upgrades."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from durapod.operator.verdicts import Outcome, judge, next_machine, retry_delay
from durapod.resources.models import RetryPolicy


def _pod(
    phase: str,
    *,
    reason: str | None = None,
    exit_code: int | None = None,
    term_reason: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if reason:
        status["reason"] = reason
    if exit_code is not None:
        status["containerStatuses"] = [
            {"state": {"terminated": {"exitCode": exit_code, "reason": term_reason or "Error"}}}
        ]
    meta: dict[str, Any] = {"name": "r-1"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": status}


def test_judging_how_a_pod_ended() -> None:
    assert judge(_pod("Running"), False, {}) is None
    assert judge(_pod("Succeeded", exit_code=0), False, {"output": 1}).outcome == Outcome.SUCCEEDED
    assert (
        judge(_pod("Succeeded", exit_code=0), False, {"suspend": {"until": "x"}}).outcome
        == Outcome.SUSPENDED
    )
    oom = judge(_pod("Failed", exit_code=137, term_reason="OOMKilled"), False, {})
    assert oom is not None and oom.outcome == Outcome.OOM_KILLED
    evicted = _pod("Failed", reason="Evicted", exit_code=143)
    assert (
        judge(evicted, False, {"error": {"type": "X", "message": "m"}}).outcome == Outcome.EVICTED
    )
    target = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]
    preempted = judge(_pod("Failed", exit_code=143, conditions=target), False, {})
    assert preempted is not None and "PreemptionByScheduler" in preempted.detail
    assert judge(_pod("Failed", exit_code=143, deleting=True), False, {}).outcome == Outcome.EVICTED
    assert judge(_pod("Running"), True, {}).outcome == Outcome.EVICTED  # deleted under the run
    error = {"type": "ValueError", "message": "bad", "retryable": True}
    assert judge(_pod("Failed", exit_code=1), False, {"error": error}).error == error
    crash = judge(_pod("Failed", exit_code=137), False, {})
    assert crash is not None and crash.outcome == Outcome.CRASHED
    assert "exited with code 137 without reporting" in crash.detail
    deadline = judge(_pod("Failed", reason="DeadlineExceeded", exit_code=143), False, {})
    assert deadline is not None and deadline.outcome == Outcome.TIMED_OUT


def test_backoff_grows_by_the_factor_up_to_the_maximum() -> None:
    policy = RetryPolicy(max_attempts=10, min_delay="1s", max_delay="5s", factor=2, jitter=False)
    delays = [retry_delay(policy, attempt, {}) for attempt in range(1, 6)]
    assert delays == [timedelta(seconds=s) for s in (1, 2, 4, 5, 5)]


def test_jitter_stays_between_half_and_all_of_the_delay() -> None:
    policy = RetryPolicy(max_attempts=10, min_delay="4s", max_delay="1m", jitter=True)
    for _ in range(50):
        delay = retry_delay(policy, 1, {})
        assert delay is not None and timedelta(seconds=2) <= delay <= timedelta(seconds=4)


@pytest.mark.parametrize(
    ("attempt", "error"),
    [
        (3, {"type": "ValueError"}),  # attempts used up
        (1, {"type": "AbortRun", "retryable": False}),  # the task said stop
        (1, {"type": "KeyError"}),  # listed as non-retryable
    ],
)
def test_when_there_is_no_retry(attempt: int, error: dict[str, Any]) -> None:
    policy = RetryPolicy(max_attempts=3, non_retryable_errors=["KeyError"])
    assert retry_delay(policy, attempt, error) is None


def test_retry_after_overrides_the_policy() -> None:
    policy = RetryPolicy(max_attempts=3, min_delay="1s")
    assert retry_delay(policy, 1, {"retryAfter": 42.0}) == timedelta(seconds=42)


def test_machines_grow_one_preset_at_a_time() -> None:
    assert next_machine("micro") == "small-1x"
    assert next_machine("medium-2x") == "large-1x"
    assert next_machine("large-2x") == "large-2x"
