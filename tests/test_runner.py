"""The runner SDK: @task, durable steps and waits, played with durapod.testing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pydantic
import pytest

import durapod
from durapod import AbortRun, ChildRunFailedError, Context, Retry, RetryAfter, task
from durapod.operator.verdicts import retry_delay
from durapod.resources.definitions import spec
from durapod.runner.entrypoint import describe, invoke, load
from durapod.testing import MemoryJournal, TaskHarness

CTX = Context(run_id="r", name="n", namespace="ns", attempt=2, journal=MemoryJournal())


def test_public_sdk_exports_are_pinned() -> None:
    assert sorted(durapod.__all__) == [
        "AbortRun",
        "ApiError",
        "CheckpointTooLargeError",
        "ChildRunFailedError",
        "Context",
        "DuplicateStepError",
        "DurapodError",
        "InvalidPayloadError",
        "NonRetryableError",
        "NotSerializableError",
        "OnOOM",
        "Queue",
        "Retry",
        "RetryAfter",
        "Task",
        "task",
    ]


def test_load_finds_module_function() -> None:
    assert load("tests.tasks:explode").__name__ == "explode"
    with pytest.raises(AttributeError):
        load("tests.tasks:nothing_here")
    with pytest.raises(ModuleNotFoundError):
        load("tests.no_such_module:f")


def test_invoke_sync_async_with_and_without_context() -> None:
    def plain(payload: dict[str, int]) -> int:
        return payload["x"] + 1

    def with_ctx(payload: dict[str, int], ctx: Context) -> int:
        return payload["x"] + ctx.attempt

    async def coroutine(payload: dict[str, int], ctx: Context) -> str:
        return f"{payload['x']}-{ctx.run_id}"

    assert invoke(plain, {"x": 1}, CTX) == 2
    assert invoke(with_ctx, {"x": 1}, CTX) == 3
    assert invoke(coroutine, {"x": 1}, CTX) == "1-r"


class Order(pydantic.BaseModel):
    id: int
    amount: float


def test_task_decorator_checks_its_target_and_types_the_payload() -> None:
    @task("charge", retry=Retry(max_attempts=5), max_duration=timedelta(minutes=2))
    async def charge(order: Order, ctx: Context) -> Order:
        return Order(id=order.id, amount=order.amount * 2)

    assert invoke(charge, {"id": 1, "amount": 2.5}, CTX) == {"id": 1, "amount": 5.0}
    generated = spec(charge, image="shop:1", entrypoint="shop.tasks:charge")
    assert generated["retry"]["maxAttempts"] == 5
    assert generated["maxDuration"] == "2m"
    with pytest.raises(Exception, match="invalid payload for task charge"):
        invoke(charge, {"id": "x"}, CTX)

    @task
    def bare_name(payload: Any) -> None: ...

    assert bare_name.id == "bare-name"
    with pytest.raises(TypeError, match="must take \\(payload\\) or \\(payload, ctx\\)"):
        task(lambda: None)
    with pytest.raises(TypeError, match="must take"):
        task("three")(lambda a, b, c: None)
    with pytest.raises(ValueError, match="DNS label"):
        task("Bad_Id")(lambda p: None)


SIDE_EFFECTS: list[str] = []


async def five_steps(payload: dict[str, Any], ctx: Context) -> int:
    total = 0
    for i in range(1, 6):
        total += await ctx.step(f"step-{i}", lambda i=i: SIDE_EFFECTS.append(f"s{i}") or i)
    return total


def test_a_resumed_run_skips_completed_steps() -> None:
    SIDE_EFFECTS.clear()
    harness = TaskHarness(five_steps)
    assert harness.run(crash_after="step-3").status == "crashed"
    result = harness.run()
    assert result.status == "succeeded" and result.output == 15
    assert SIDE_EFFECTS == ["s1", "s2", "s3", "s4", "s5"]


def test_completed_tells_what_an_earlier_pod_did() -> None:
    seen: list[bool] = []

    async def fn(payload: Any, ctx: Context) -> None:
        seen.append(ctx.completed("first"))
        await ctx.step("first", lambda: 1)
        await ctx.step("second", lambda: 2)

    harness = TaskHarness(fn)
    assert harness.run(crash_after="first").status == "crashed"
    assert harness.run().status == "succeeded"
    assert seen == [False, True]


def test_step_outputs_are_their_json_round_trip_and_names_unique() -> None:
    async def fn(payload: Any, ctx: Context) -> Any:
        first = await ctx.step("t", lambda: (1, 2))
        await ctx.step("t", lambda: 3)
        return first

    result = TaskHarness(fn).run()
    assert result.status == "failed" and type(result.error).__name__ == "DuplicateStepError"
    assert "'t' is used twice" in str(result.error)


def test_an_oversized_step_output_fails_naming_step_and_size() -> None:
    async def fn(payload: Any, ctx: Context) -> Any:
        return await ctx.step("big", lambda: "x" * 2000)

    result = TaskHarness(fn, checkpoint_limit=1000).run()
    assert result.status == "failed"
    assert str(result.error) == (
        "step 'big' output is 2002 bytes, over the checkpoint limit of 1000 bytes"
    )
    assert describe(result.error)["retryable"] is False


def test_checkpoint_and_restore_keep_the_latest_state() -> None:
    async def fn(payload: Any, ctx: Context) -> Any:
        done = ctx.restore() or 0
        for i in range(done, 5):
            ctx.checkpoint(i + 1)
        return ctx.restore()

    harness = TaskHarness(fn)
    assert harness.run().output == 5
    assert harness.journal.checkpoints["$state"]["output"] == 5


def test_idempotency_keys_are_stable_per_run_and_name() -> None:
    other = Context(run_id="other", name="n", namespace="ns", attempt=1, journal=MemoryJournal())
    assert CTX.idempotency_key("pay") == CTX.idempotency_key("pay")
    assert CTX.idempotency_key("pay") != CTX.idempotency_key("ship")
    assert CTX.idempotency_key("pay") != other.idempotency_key("pay")


def test_durable_sleep_suspends_then_resumes_after_the_time() -> None:
    calls: list[str] = []

    async def fn(payload: Any, ctx: Context) -> str:
        await ctx.step("before", lambda: calls.append("before"))
        await ctx.sleep("10m")
        await ctx.step("after", lambda: calls.append("after"))
        return "done"

    harness = TaskHarness(fn)
    first = harness.run()
    assert first.status == "suspended" and first.suspend is not None
    assert harness.run().status == "suspended"  # woken early: sleeps again, runs nothing
    harness.advance(timedelta(minutes=10))
    assert harness.run().output == "done"
    assert calls == ["before", "after"]


def test_trigger_and_wait_returns_the_child_output_or_raises() -> None:
    async def parent(payload: Any, ctx: Context) -> Any:
        return await ctx.trigger_and_wait("child-task", {"n": 2})

    harness = TaskHarness(parent, name="parent-1")
    waiting = harness.run()
    assert waiting.suspend is not None
    child = waiting.suspend["child"]
    assert child.startswith("parent-1-")
    assert harness.journal.children == [{"task": "child-task", "payload": {"n": 2}, "name": child}]
    harness.finish_child(child, output={"doubled": 4})
    assert harness.run().output == {"doubled": 4}
    assert len(harness.journal.children) == 1  # never triggered twice

    failing = TaskHarness(parent, name="parent-2")
    name = failing.run().suspend["child"]  # type: ignore[index]
    failing.finish_child(name, error={"type": "ValueError", "message": "bad"})
    result = failing.run()
    assert type(result.error).__name__ == "ChildRunFailedError"


def test_a_failed_child_run_is_reported_as_not_retryable() -> None:
    async def parent(payload: Any, ctx: Context) -> Any:
        return await ctx.trigger_and_wait("child-task", {"n": 1})

    harness = TaskHarness(parent, name="parent-3")
    child = harness.run().suspend["child"]  # type: ignore[index]
    harness.finish_child(child, error={"type": "ValueError", "message": "bad", "retryable": True})
    result = harness.run()
    assert isinstance(result.error, ChildRunFailedError) and result.error.child == child
    report = describe(result.error)
    assert report["type"] == "ChildRunFailedError"
    assert report["retryable"] is False  # a retry would only replay the same failure
    assert f"child run {child} failed: ValueError: bad" in report["message"]
    # ... so the operator fails the parent now instead of spending its attempts
    assert retry_delay(Retry(max_attempts=5), 1, report) is None


def test_a_task_can_opt_in_to_retrying_a_failed_child() -> None:
    async def parent(payload: Any, ctx: Context) -> Any:
        try:
            return await ctx.trigger_and_wait("child-task", {}, key=f"child-{ctx.attempt}")
        except ChildRunFailedError as exc:
            raise RuntimeError(f"child failed: {exc}") from exc

    harness = TaskHarness(parent, name="parent-4")
    first = harness.run().suspend["child"]  # type: ignore[index]
    harness.finish_child(first, error={"type": "ValueError", "message": "flaky"})
    failed = harness.run()
    report = describe(failed.error)  # type: ignore[arg-type]
    assert report["type"] == "RuntimeError" and report["retryable"] is True
    harness.attempt = 2  # the operator retries: the new attempt waits on a new child
    second = harness.run().suspend["child"]  # type: ignore[index]
    assert second != first and len(harness.journal.children) == 2
    harness.finish_child(second, output="ok")
    assert harness.run().output == "ok"


def test_error_reports_carry_retry_semantics() -> None:
    assert describe(ValueError("x"))["retryable"] is True
    assert describe(AbortRun("stop"))["retryable"] is False
    report = describe(RetryAfter("30s", "rate limited"))
    assert report["retryAfter"] == 30.0 and report["message"] == "rate limited"
