"""The SDK's shared types: one retry policy (and queue) from ``@task`` through the CRD
schema to the operator's verdicts, the error hierarchy under ``DurapodError``, and a
decorated task typed as the function it wraps."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
from mypy import api as mypy_api

import durapod
from durapod import (
    AbortRun,
    ApiError,
    DurapodError,
    NonRetryableError,
    OnOOM,
    Queue,
    Retry,
    RetryAfter,
    task,
)
from durapod.client import InvalidRequest, NotFound, Unavailable
from durapod.operator.verdicts import retry_delay
from durapod.resources import crds
from durapod.resources.definitions import spec
from durapod.resources.models import TaskDefinition, TaskDefinitionSpec
from durapod.runner import errors
from durapod.runner.entrypoint import describe

REPO = Path(__file__).resolve().parent.parent


def _noop(payload: Any) -> None: ...


# -- one retry type ----------------------------------------------------------------------


def test_the_sdk_and_the_resource_models_share_one_retry_type() -> None:
    assert TaskDefinitionSpec.model_fields["retry"].annotation is Retry
    assert TaskDefinitionSpec.model_fields["queue"].annotation is Queue
    assert isinstance(TaskDefinitionSpec(image="i", entrypoint="m:f").retry, Retry)


def test_a_retry_travels_from_the_decorator_to_the_operators_verdict() -> None:
    declared = Retry(
        max_attempts=3,
        min_delay=timedelta(milliseconds=250),
        max_delay=timedelta(seconds=1),
        factor=3,
        jitter=False,
        non_retryable_errors=("KeyError",),
        on_oom=OnOOM(upgrade_machine=True),
    )
    wire = spec(task("t", retry=declared)(_noop), image="i", entrypoint="m:t")["retry"]
    assert wire == {
        "maxAttempts": 3,
        "minDelay": "250ms",
        "maxDelay": "1s",
        "factor": 3.0,
        "jitter": False,
        "nonRetryableErrors": ["KeyError"],
        "onOOM": {"upgradeMachine": True},
    }
    # what the operator reads back from the TaskDefinition is the declared policy itself
    policy = TaskDefinitionSpec.model_validate({"image": "i", "entrypoint": "m:t", "retry": wire})
    assert policy.retry == declared
    assert [retry_delay(policy.retry, n, {"type": "ValueError"}) for n in (1, 2, 3)] == [
        timedelta(milliseconds=250),
        timedelta(milliseconds=750),
        None,  # the third attempt was the last
    ]
    assert retry_delay(policy.retry, 1, {"type": "KeyError"}) is None


def test_a_hand_written_retry_gets_the_documented_defaults() -> None:
    policy = TaskDefinitionSpec.model_validate(
        {"image": "i", "entrypoint": "m:f", "retry": {"maxAttempts": 2, "minDelay": "1m30s"}}
    ).retry
    assert policy == Retry(max_attempts=2, min_delay=timedelta(seconds=90))
    assert (policy.max_delay, policy.factor, policy.jitter) == (timedelta(minutes=5), 2.0, True)


@pytest.mark.parametrize(
    ("field", "value", "schema", "words"),
    [
        ("max_attempts", 0, {"minimum": 1}, "max_attempts must be at least 1"),
        ("max_attempts", 101, {"maximum": 100}, "max_attempts must be at most 100"),
        ("factor", 0.5, {"minimum": 1.0}, "factor must be at least 1.0"),
        ("factor", 11.0, {"maximum": 10.0}, "factor must be at most 10.0"),
    ],
)
def test_retry_bounds_are_one_rule_in_the_sdk_the_models_and_the_crd(
    field: str, value: Any, schema: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        Retry(**{field: value})
    camel = {"max_attempts": "maxAttempts", "factor": "factor"}[field]
    with pytest.raises(pydantic.ValidationError, match=words):
        TaskDefinitionSpec.model_validate(
            {"image": "i", "entrypoint": "m:f", "retry": {camel: value}}
        )
    crd_retry = crds.openapi_schema(TaskDefinition)["properties"]["spec"]["properties"]["retry"]
    assert schema.items() <= crd_retry["properties"][camel].items()


def test_the_crd_schema_of_retry_and_queue() -> None:
    properties = crds.openapi_schema(TaskDefinition)["properties"]["spec"]["properties"]
    retry = properties["retry"]
    assert retry["default"] == {} and retry["type"] == "object"
    assert list(retry["properties"]) == [
        "maxAttempts",
        "minDelay",
        "maxDelay",
        "factor",
        "jitter",
        "nonRetryableErrors",
        "onOOM",
    ]
    assert retry["properties"]["minDelay"]["default"] == "1s"
    assert retry["properties"]["maxDelay"]["default"] == "5m"
    assert retry["properties"]["minDelay"]["pattern"] == durapod.durations.DURATION_PATTERN
    assert retry["properties"]["onOOM"]["properties"]["upgradeMachine"]["type"] == "boolean"
    queue = properties["queue"]["properties"]
    assert queue["name"]["default"] == "default" and queue["name"]["maxLength"] == 63
    assert queue["concurrencyLimit"] == {
        "type": "integer",
        "minimum": 1,
        "description": "Most pods the queue may hold at once.",
    }


def test_what_the_crd_admits_the_operator_can_read() -> None:
    # maxDelay below minDelay passes the CRD schema, so the shared type must load it (the
    # operator's rule: maxDelay wins); only the SDK's decorator refuses it, as a mistake.
    loose = {"minDelay": "10s", "maxDelay": "1s"}
    policy = TaskDefinitionSpec.model_validate(
        {"image": "i", "entrypoint": "m:f", "retry": loose}
    ).retry
    assert retry_delay(policy, 1, {}) == timedelta(seconds=1)
    with pytest.raises(ValueError, match="min_delay exceeds its max_delay"):
        task("t", retry=policy)(_noop)


def test_sdk_options_are_checked_when_declared() -> None:
    with pytest.raises(TypeError, match=r"Retry\.min_delay must be a timedelta"):
        Retry(min_delay="1s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Queue\.name 'Emails' must be a DNS label"):
        Queue("Emails")
    with pytest.raises(ValueError, match="concurrency_limit must be at least 1"):
        Queue("emails", concurrency_limit=0)
    with pytest.raises(ValueError, match="max_duration must be a positive timedelta"):
        task("t", max_duration=timedelta(0))(_noop)
    assert task("t", queue="emails")(_noop).queue == Queue("emails")


# -- errors -----------------------------------------------------------------------------


def test_every_sdk_error_is_a_durapod_error() -> None:
    public = [getattr(durapod, name) for name in durapod.__all__]
    raised = [c for c in public if isinstance(c, type) and issubclass(c, BaseException)]
    assert raised and all(issubclass(c, DurapodError) for c in raised)
    assert issubclass(AbortRun, NonRetryableError)
    assert not issubclass(RetryAfter, NonRetryableError)
    for name in ("DuplicateStepError", "CheckpointTooLargeError", "NotSerializableError"):
        assert issubclass(getattr(durapod, name), NonRetryableError)
    # durable waits unwind with Suspend, which `except Exception` (or DurapodError) cannot catch
    assert not issubclass(errors.Suspend, Exception)


def test_the_api_clients_errors_share_the_root() -> None:
    for cls in (NotFound, InvalidRequest, Unavailable):
        assert issubclass(cls, ApiError) and issubclass(cls, DurapodError)
    refused = NotFound(404, 'TaskDefinition "x" not found')
    assert (refused.status, refused.detail) == (404, 'TaskDefinition "x" not found')


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (ValueError("a bug"), True),
        (RetryAfter("5s"), True),
        (ApiError(503, "busy"), True),
        (AbortRun("stop"), False),
        (NonRetryableError("no point"), False),
        (errors.InvalidPayloadError("bad"), False),
    ],
)
def test_the_error_class_decides_whether_a_run_is_retried(exc: Exception, retryable: bool) -> None:
    report = describe(exc)
    assert report["retryable"] is retryable
    assert (retry_delay(Retry(max_attempts=5), 1, report) is not None) is retryable


class _UserError(NonRetryableError):
    """A task's own error that no retry fixes."""


def test_a_users_own_non_retryable_error_fails_the_run_at_once() -> None:
    assert describe(_UserError("gone"))["retryable"] is False


# -- types ------------------------------------------------------------------------------


def test_a_decorated_task_keeps_its_signature_for_type_checkers(tmp_path: Path) -> None:
    source = tmp_path / "typed_tasks.py"
    source.write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel

            from durapod import Context, Retry, task


            class Order(BaseModel):
                id: int


            @task("process-order", retry=Retry(max_attempts=2), queue="orders")
            async def process_order(order: Order, ctx: Context) -> dict[str, int]:
                return {"id": order.id}


            @task
            def bare(payload: str) -> int:
                return len(payload)


            reveal_type(process_order)
            reveal_type(bare("x"))
            process_order(Order(id=1), "not a context")
            bare(1)
            """
        )
    )
    out, _, _ = mypy_api.run(
        [str(source), "--strict", "--no-incremental", "--config-file", str(REPO / "pyproject.toml")]
    )
    lines = [line.split(": ", 1)[1] for line in out.splitlines() if ": " in line]
    assert lines[:2] == [
        'note: Revealed type is "durapod.runner.task.Task[[order: typed_tasks.Order, '
        'ctx: durapod.runner.context.Context], typing.Coroutine[Any, Any, dict[str, int]]]"',
        'note: Revealed type is "int"',
    ]
    assert [line for line in lines if line.startswith("error:")] == [
        # an async task is still a coroutine function to mypy
        'error: Value of type "Coroutine[Any, Any, dict[str, int]]" must be used  '
        "[unused-coroutine]",
        'error: Argument 2 to "__call__" of "Task" has incompatible type "str"; '
        'expected "Context"  [arg-type]',
        'error: Argument 1 to "__call__" of "Task" has incompatible type "int"; '
        'expected "str"  [arg-type]',
    ]
