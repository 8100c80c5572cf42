"""Task functions of tests/test_logs.py: what they log, print and raise is what the tests
look for in pod logs."""

from __future__ import annotations

from typing import Any

from durapod import Context


def _check(order: int, attempt: int) -> None:
    # A frame of its own: the traceback shows more than the task function.
    raise ValueError(f"order {order} is invalid (attempt {attempt})")


async def fail_loudly(payload: dict[str, Any], ctx: Context) -> None:
    ctx.logger.info("checking order", extra={"order_id": payload["order"]})
    print(f"printed by attempt {ctx.attempt}", flush=True)
    _check(payload["order"], ctx.attempt)


async def nap(payload: dict[str, Any], ctx: Context) -> str:
    ctx.logger.info("before the nap", extra={"order_id": payload["order"]})
    await ctx.sleep("1h")
    return "rested"


async def chatty(payload: dict[str, Any], ctx: Context) -> None:
    # One line far longer than what an answer of ``durapod runs logs`` holds of a pod.
    print("x" * payload["bytes"], flush=True)
    print("the last line", flush=True)
