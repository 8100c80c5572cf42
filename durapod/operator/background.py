"""Background tasks (timers, listeners) whose failures are logged, never lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("durapod.operator")


def spawn(coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coro, name=what)
    task.add_done_callback(_report)
    return task


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed", task.get_name(), exc_info=exc)
