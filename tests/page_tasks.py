"""Tasks the run pages' tests run in pods (kept apart from tests/tasks.py: only they use them)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from durapod import Context


async def _number(i: int, pause: float) -> int:
    await asyncio.sleep(pause)  # spreads the checkpoints out on the timeline
    return i


async def gated(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """``before`` steps; then the first pod waits until the test evicts it, and the next
    pod carries on with ``after`` more steps. Returns the sum of the step numbers."""
    before, after, pause = payload["before"], payload["after"], payload.get("pause", 0)
    total = 0
    for i in range(1, before + after + 1):
        if i == before + 1 and os.environ.get("DURAPOD_POD_INDEX") == "1":
            await asyncio.sleep(3600)  # ends when the test evicts this pod
        total += await ctx.step(f"step-{i}", _number, i, pause)
    return {"sum": total, "note": payload.get("note")}
