"""Request and response bodies of the public API (pydantic: they make /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from durapod.durations import DURATION_PATTERN
from durapod.resources.models import DNS_LABEL

MAX_BATCH = 500
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30s", "24h"])]


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class TriggerRequest(Body):
    """How to run a task: its payload and the run's options."""

    payload: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    idempotency_key_ttl: Duration | None = Field(default=None, alias="idempotencyKeyTTL")
    concurrency_key: str | None = Field(default=None, min_length=1, max_length=255)
    priority: int = Field(default=0, ge=-1000, le=1000)
    delay: Duration | None = None
    not_before: datetime | None = None
    ttl: Duration | None = None
    tags: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=20)

    def spec(self, task: str) -> dict[str, Any]:
        """The TaskRun spec this request asks for."""
        spec = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        return {"task": task, **spec}


class BatchItem(TriggerRequest):
    task: str = Field(pattern=DNS_LABEL, max_length=63)


class BatchRequest(Body):
    runs: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class RunRef(Body):
    """A run as a trigger answers: enough to find it again."""

    id: str | None = Field(description="The TaskRun's uid; null until the server assigns it.")
    name: str
    namespace: str
    task: str
    phase: str | None = None
    duplicate: bool = Field(default=False, description="An existing run, by idempotency key.")


class BatchResponse(Body):
    runs: list[RunRef]


class Attempt(Body):
    pod: str
    attempt: int
    machine: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    error: dict[str, Any] | None = None


class CheckpointInfo(Body):
    step: str
    seq: int
    created_at: datetime


class RunDetail(RunRef):
    payload: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    attempt: int = 0
    resumes: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duplicate_of: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    checkpoints: list[CheckpointInfo] = Field(default_factory=list)


class RunSummary(Body):
    id: str
    name: str
    namespace: str
    task: str
    phase: str
    attempt: int
    tags: list[str]
    created_at: datetime
    finished_at: datetime | None


class RunPage(Body):
    runs: list[RunSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class QueueView(Body):
    name: str
    concurrency_limit: int | None
    concurrency_key_limit: int | None
    running: int = Field(description="Runs holding a slot (a pod, or about to have one).")
    waiting: int = Field(description="Runs in line for a slot.")


class QueueList(Body):
    queues: list[QueueView]
