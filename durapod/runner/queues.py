"""The queue a task's runs wait in: one type for the SDK and the TaskDefinition's ``spec.queue``.

``@task(queue="emails")`` is ``Queue("emails")``; several tasks may share a queue (give
it the same limits in each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from durapod.runner import wire


@dataclass(frozen=True)
class Queue:
    """Where runs wait for a pod; its limits hold across every operator replica."""

    __pydantic_config__: ClassVar[dict[str, Any]] = wire.config()

    name: str = field(
        default="default", metadata=wire.limits(pattern=wire.DNS_LABEL, max_length=63)
    )
    """The queue's name, a DNS label."""
    concurrency_limit: int | None = field(default=None, metadata=wire.limits(minimum=1))
    """Most pods the queue may hold at once."""
    concurrency_key_limit: int | None = field(default=None, metadata=wire.limits(minimum=1))
    """Most pods one concurrency key may hold at once."""

    def __post_init__(self) -> None:
        wire.check(self)
