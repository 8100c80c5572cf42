"""The runner: the SDK task code uses, and the entrypoint of each task pod.

Light by contract (checked by import-linter): no operator, API, store or dev imports,
no kopf, psycopg, pydantic or Kubernetes client, so a task pod starts fast.
"""

from durapod.runner.context import Context
from durapod.runner.errors import (
    AbortRun,
    ApiError,
    CheckpointTooLargeError,
    ChildRunFailedError,
    DuplicateStepError,
    DurapodError,
    InvalidPayloadError,
    NonRetryableError,
    NotSerializableError,
    RetryAfter,
)
from durapod.runner.queues import Queue
from durapod.runner.retry import OnOOM, Retry
from durapod.runner.task import Task, task

__all__ = [
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
