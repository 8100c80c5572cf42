"""The demo task of ``durapod dev --demo``."""

from __future__ import annotations

from typing import Any

from durapod import Context


def hello(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    ctx.logger.info("saying hello to %s", payload.get("name", "world"))
    return {"greeting": f"Hello, {payload.get('name', 'world')}!", "attempt": ctx.attempt}
