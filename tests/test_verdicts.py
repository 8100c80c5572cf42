"""The operator's pure decisions: how a pod ended, retry delays, machine upgrades."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from durapod.durations import parse_duration
from durapod.operator.verdicts import Outcome, judge, next_machine, retry_delay
from durapod.runner.retry import Retry


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


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
    policy = Retry(max_attempts=10, min_delay=_s(1), max_delay=_s(5), factor=2, jitter=False)
    delays = [retry_delay(policy, attempt, {}) for attempt in range(1, 6)]
    assert delays == [timedelta(seconds=s) for s in (1, 2, 4, 5, 5)]


@pytest.mark.parametrize(
    ("min_delay", "max_delay", "factor", "attempt", "low", "high"),
    [
        # (policy, attempt) -> the bounds every jittered delay must keep
        ("1s", "5m", 2.0, 1, 1, 2),  # the reported case: 1s must never become 516ms
        ("4s", "1m", 2.0, 1, 4, 8),
        ("1s", "5m", 2.0, 4, 8, 16),
        ("1s", "5s", 2.0, 3, 4, 5),  # jitter pushes past maxDelay: capped
        ("1s", "5s", 2.0, 9, 5, 5),  # already at the cap: stays there
        ("250ms", "250ms", 3.0, 2, 0.25, 0.25),  # minDelay == maxDelay leaves no room
        ("100ms", "2s", 1.0, 7, 0.1, 0.2),  # factor 1: a constant delay, jittered up
        ("1s", "1h", 10.0, 99, 3600, 3600),  # huge growth must not overflow
    ],
)
def test_jitter_keeps_the_delay_within_min_and_max(
    min_delay: str, max_delay: str, factor: float, attempt: int, low: float, high: float
) -> None:
    policy = Retry(
        max_attempts=100,
        min_delay=parse_duration(min_delay),
        max_delay=parse_duration(max_delay),
        factor=factor,
        jitter=True,
    )
    delays = [retry_delay(policy, attempt, {}) for _ in range(500)]
    assert all(d is not None for d in delays)
    seconds = [d.total_seconds() for d in delays if d is not None]
    assert min(seconds) >= low, f"below the floor: {min(seconds)}s < {low}s"
    assert max(seconds) <= high, f"above the cap: {max(seconds)}s > {high}s"
    assert seconds[0] >= parse_duration(min_delay).total_seconds()
    assert max(seconds) <= parse_duration(max_delay).total_seconds()
    if low < high:  # jitter actually spreads the delays out
        assert len(set(seconds)) > 1


def test_jitter_never_goes_below_min_delay_for_any_attempt() -> None:
    policy = Retry(max_attempts=20, min_delay=_s(1), max_delay=_s(30), jitter=True)
    for attempt in range(1, 20):
        for _ in range(200):
            delay = retry_delay(policy, attempt, {})
            assert delay is not None
            assert timedelta(seconds=1) <= delay <= timedelta(seconds=30), (attempt, delay)


def test_retry_after_is_not_jittered() -> None:
    policy = Retry(max_attempts=3, min_delay=_s(60), max_delay=_s(300), jitter=True)
    for _ in range(50):
        # the task's explicit retryAfter wins, even below minDelay
        assert retry_delay(policy, 1, {"retryAfter": 0.5}) == timedelta(seconds=0.5)


@pytest.mark.parametrize(
    ("attempt", "error"),
    [
        (3, {"type": "ValueError"}),  # attempts used up
        (1, {"type": "AbortRun", "retryable": False}),  # the task said stop
        (1, {"type": "KeyError"}),  # listed as non-retryable
    ],
)
def test_when_there_is_no_retry(attempt: int, error: dict[str, Any]) -> None:
    policy = Retry(max_attempts=3, non_retryable_errors=("KeyError",))
    assert retry_delay(policy, attempt, error) is None


def test_retry_after_overrides_the_policy() -> None:
    policy = Retry(max_attempts=3, min_delay=_s(1))
    assert retry_delay(policy, 1, {"retryAfter": 42.0}) == timedelta(seconds=42)


def test_machines_grow_one_preset_at_a_time() -> None:
    assert next_machine("micro") == "small-1x"
    assert next_machine("medium-2x") == "large-1x"
    assert next_machine("large-2x") == "large-2x"
