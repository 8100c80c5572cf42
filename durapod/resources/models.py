"""The durapod custom resources (group ``durapod.io``, version ``v1``) as pydantic models.

These models are the one source of truth: the CRD manifests under ``crds/`` are generated
from them (``durapod crds``), and the operator, the API and the CLI read and write
resources through them. Field names are camelCase on the wire, snake_case in Python.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from durapod.durations import DURATION_PATTERN
from durapod.runner.queues import Queue
from durapod.runner.retry import Retry
from durapod.runner.wire import DNS_LABEL as DNS_LABEL

GROUP = "durapod.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Largest payload a run accepts, in bytes of compact JSON. The real API server refuses
#: request bodies over 3 MiB; a payload must leave room for the rest of the object.
MAX_PAYLOAD_BYTES = 512 * 1024
#: How long an idempotency key holds when the trigger does not say.
DEFAULT_KEY_TTL = "24h"
#: Default limit for one checkpoint's output, per TaskDefinition.
DEFAULT_CHECKPOINT_BYTES = 1024 * 1024


def payload_too_large(payload: Any) -> str | None:
    """Why a payload is too large (its size in UTF-8 bytes of compact JSON), or None."""
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    if size <= MAX_PAYLOAD_BYTES:
        return None
    return f"payload is {size} bytes, over the limit of {MAX_PAYLOAD_BYTES} bytes"


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENTRYPOINT = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30s", "10m", "1h30m"])]
Quantity = Annotated[str, Field(pattern=QUANTITY, examples=["500m", "256Mi"])]
#: Any JSON object; kept as is by the API server (x-kubernetes-preserve-unknown-fields).
JsonObject = Annotated[dict[str, Any], Field(json_schema_extra={"x-preserve": True})]


#: For an object field whose parts all have defaults: the API server fills them in.
_DEFAULTED: dict[str, Any] = {"default": {}}


class Model(BaseModel):
    """Base for every resource part: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True
    )


class Machine(StrEnum):
    """Machine presets (CPU and memory), smallest first."""

    MICRO = "micro"
    SMALL_1X = "small-1x"
    SMALL_2X = "small-2x"
    MEDIUM_1X = "medium-1x"
    MEDIUM_2X = "medium-2x"
    LARGE_1X = "large-1x"
    LARGE_2X = "large-2x"


class Phase(StrEnum):
    """Where a run is in its life; finished phases never change again."""

    PENDING = "Pending"
    QUEUED = "Queued"
    STARTING = "Starting"
    RUNNING = "Running"
    RETRYING = "Retrying"
    RESUMING = "Resuming"
    WAITING = "Waiting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"

    @property
    def finished(self) -> bool:
        return self in FINISHED_PHASES


FINISHED_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED, Phase.TIMED_OUT})


class EnvVar(Model):
    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=253)
    value: str = ""


class ResourceList(Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(Model):
    """Container resources; a machine preset fills what is not given here."""

    requests: ResourceList | None = None
    limits: ResourceList | None = None


class WebhookProvider(StrEnum):
    GITHUB = "github"
    STRIPE = "stripe"
    GENERIC = "generic"


class Webhook(Model):
    provider: WebhookProvider = WebhookProvider.GENERIC
    secret_name: str = Field(pattern=DNS_LABEL, max_length=253)
    secret_key: str = "secret"
    tolerance: Duration = "5m"


class TaskDefinitionSpec(Model):
    image: str = Field(min_length=1, description="Container image holding the task code.")
    entrypoint: str = Field(pattern=ENTRYPOINT, description="The task function, module:function.")
    command: list[str] = Field(
        default_factory=lambda: ["python", "-m", "durapod.runner"],
        description="Container command; the durapod runner by default.",
    )
    env: list[EnvVar] = Field(default_factory=list)
    machine: Machine = Machine.SMALL_1X
    resources: Resources | None = None
    # The SDK's own dataclasses (durapod.runner.wire explains how pydantic reads them).
    retry: Retry = Field(default_factory=Retry, json_schema_extra=_DEFAULTED)
    max_duration: Duration | None = Field(default=None, description="Kill and time out after.")
    max_resumes: int = Field(default=10, ge=0, le=1000)
    start_deadline: Duration = Field(
        default="10m",
        description="Fail a run whose pod cannot start (unschedulable, image not pulled) "
        "for this long.",
    )
    queue: Queue = Field(default_factory=Queue, json_schema_extra=_DEFAULTED)
    ttl: Duration = Field(default="7d", description="Keep finished runs this long.")
    checkpoint_size_limit: int = Field(
        default=DEFAULT_CHECKPOINT_BYTES, ge=1, le=16 * 1024 * 1024, description="Bytes."
    )
    payload_schema: JsonObject | None = Field(
        default=None, description="JSON Schema that payloads must satisfy."
    )
    webhook: Webhook | None = None
    service_account_name: str | None = Field(default=None, pattern=DNS_LABEL, max_length=253)


class TaskRunParent(Model):
    name: str = Field(max_length=253)
    uid: str | None = None


class TaskRunSpec(Model):
    task: str = Field(pattern=DNS_LABEL, max_length=63, description="The TaskDefinition's name.")
    payload: JsonObject = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    idempotency_key_ttl: Duration | None = Field(default=None, alias="idempotencyKeyTTL")
    concurrency_key: str | None = Field(default=None, min_length=1, max_length=255)
    priority: int = Field(default=0, ge=-1000, le=1000)
    delay: Duration | None = None
    not_before: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    ttl: Duration | None = None
    tags: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=20)
    cancel: bool = False
    parent: TaskRunParent | None = None


class Checkpoint(Model):
    step: str
    at: str


class RunError(Model):
    type: str
    message: str
    reason: str | None = Field(
        default=None, description="Why the run failed: TaskError, UnknownTask, PodFailed, ..."
    )
    traceback: str | None = None


class Condition(Model):
    type: str
    status: str = Field(json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


class TaskRunStatus(Model):
    # kopf keeps its own bookkeeping under status; the schema must not prune it.
    model_config = ConfigDict(json_schema_extra={"x-preserve": True})

    phase: Phase | None = None
    attempt: int = 0
    resumes: int = 0
    pods: int = Field(default=0, description="Pods the run has had; the latest is <run>-<pods>.")
    pod_name: str | None = None
    machine: Machine | None = Field(default=None, description="The machine preset in use.")
    resume_at: str | None = Field(
        default=None, description="When a Retrying or Waiting run gets its next pod."
    )
    waiting_for: str | None = Field(default=None, description="The child run being waited on.")
    admit_as: str | None = Field(
        default=None, description="What a Queued run does once admitted: start, retry, resume."
    )
    definition: JsonObject | None = Field(
        default=None, description="The TaskDefinition spec this run was admitted with."
    )
    last_checkpoint: Checkpoint | None = None
    output: Any = None
    error: RunError | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration: str | None = None
    duplicate_of: str | None = None
    reason: str | None = Field(
        default=None,
        description="Why the run is where it is, in one word: Unschedulable, "
        "ImagePullBackOff, OOMKilled, TaskError...",
    )
    conditions: list[Condition] = Field(default_factory=list)


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class TaskScheduleSpec(Model):
    cron: str = Field(min_length=9, max_length=128, description="Cron, 5 or 6 fields.")
    timezone: str = "UTC"
    task: str = Field(pattern=DNS_LABEL, max_length=63)
    payload: JsonObject = Field(default_factory=dict)
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    catch_up: int = Field(default=1, ge=0, le=100, description="Missed ticks run after downtime.")
    suspend: bool = False


class TaskScheduleStatus(Model):
    model_config = ConfigDict(json_schema_extra={"x-preserve": True})

    last_schedule_time: str | None = None
    next_schedule_time: str | None = None
    last_run: str | None = None
    error: str | None = Field(default=None, description="Why the schedule cannot run.")


class PrinterColumn(Model):
    name: str
    type: str
    json_path: str
    priority: int = 0


class Resource(Model):
    """A custom resource: apiVersion/kind/metadata around a spec and a status."""

    kind: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]]
    printer_columns: ClassVar[tuple[PrinterColumn, ...]]

    api_version: str = API_VERSION
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskDefinition(Resource):
    """A task: the image and function that runs it, its retry policy, queue and limits."""

    kind: ClassVar[str] = "TaskDefinition"
    plural: ClassVar[str] = "taskdefinitions"
    short_names: ClassVar[tuple[str, ...]] = ("td",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Entrypoint", type="string", json_path=".spec.entrypoint"),
        PrinterColumn(name="Queue", type="string", json_path=".spec.queue.name"),
        PrinterColumn(name="Image", type="string", json_path=".spec.image", priority=1),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    )

    spec: TaskDefinitionSpec


class TaskRun(Resource):
    """One run of a task: its payload in spec, its progress and outcome in status."""

    kind: ClassVar[str] = "TaskRun"
    plural: ClassVar[str] = "taskruns"
    short_names: ClassVar[tuple[str, ...]] = ("tr",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Task", type="string", json_path=".spec.task"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Reason", type="string", json_path=".status.reason"),
        PrinterColumn(name="Attempt", type="integer", json_path=".status.attempt"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
        PrinterColumn(name="Duration", type="string", json_path=".status.duration"),
        PrinterColumn(name="Pod", type="string", json_path=".status.podName", priority=1),
    )

    spec: TaskRunSpec
    status: TaskRunStatus | None = None


class TaskSchedule(Resource):
    """Triggers runs of a task on a cron schedule."""

    kind: ClassVar[str] = "TaskSchedule"
    plural: ClassVar[str] = "taskschedules"
    short_names: ClassVar[tuple[str, ...]] = ("ts",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Task", type="string", json_path=".spec.task"),
        PrinterColumn(name="Cron", type="string", json_path=".spec.cron"),
        PrinterColumn(name="Suspend", type="boolean", json_path=".spec.suspend"),
        PrinterColumn(name="Last", type="date", json_path=".status.lastScheduleTime"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    )

    spec: TaskScheduleSpec
    status: TaskScheduleStatus | None = None


RESOURCES: tuple[type[Resource], ...] = (TaskDefinition, TaskRun, TaskSchedule)
