"""Tasks for the load tests: nothing but durapod imported, so pods start fast."""

from __future__ import annotations

import asyncio
from typing import Any

from durapod import Context


async def nap(payload: dict[str, Any], ctx: Context) -> Any:
    await asyncio.sleep(payload.get("pause", 0))
    return await ctx.step("done", lambda: payload.get("n"))
