"""The runner: the SDK task code uses, and the entrypoint of each task pod.

Light by contract (checked by import-linter): no operator, API, store or dev imports,
no kopf, psycopg, pydantic or Kubernetes client, so a task pod starts fast.
"""

from durapod.runner.context import Context
from durapod.runner.errors import (
    AbortRun,
    CheckpointTooLargeError,
    ChildRunFailedError,
    DuplicateStepError,
    NotSerializableError,
    RetryAfter,
)
from durapod.runner.retry import Retry
from durapod.runner.task import Task, task

__all__ = [
    "AbortRun",
    "CheckpointTooLargeError",
    "ChildRunFailedError",
    "Context",
    "DuplicateStepError",
    "NotSerializableError",
    "Retry",
    "RetryAfter",
    "Task",
    "task",
]
