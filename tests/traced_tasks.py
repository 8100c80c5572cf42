"""Tasks for the tracing tests: nothing but durapod imported, so pods start fast."""

from __future__ import annotations

import asyncio
from typing import Any

from durapod import Context


async def paused(payload: dict[str, Any], ctx: Context) -> int:
    """Steps one, two, three; between one and two the first pod pauses (a test evicts it
    then), a resumed pod does not (step one comes from its checkpoint)."""
    fresh = not ctx.completed("one")
    first = await ctx.step("one", lambda: payload["n"])
    if fresh:
        await asyncio.sleep(payload.get("pause", 0))
    second = await ctx.step("two", lambda: first + 1)
    third = await ctx.step("three", lambda: second + 1)
    return int(third)


async def failing_step(payload: dict[str, Any], ctx: Context) -> None:
    """A step that raises (its span records the exception)."""

    def boom() -> None:
        raise ValueError("no such order")

    await ctx.step("boom", boom)
