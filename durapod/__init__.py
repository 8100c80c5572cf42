"""durapod: durable background tasks for Kubernetes.

The SDK a task imports; everything here is light (standard library and the task's own
needs). The operator, API, store and dev parts live in their own subpackages.
"""

from durapod.runner import (
    AbortRun,
    CheckpointTooLargeError,
    ChildRunFailedError,
    Context,
    DuplicateStepError,
    NotSerializableError,
    Retry,
    RetryAfter,
    Task,
    task,
)

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
__version__ = "0.1.0"
