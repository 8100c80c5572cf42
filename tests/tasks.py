"""Task functions the end-to-end tests run in pods. Side effects go to a test table
(``effects``) in the database named by the payload's ``dsn``, so tests can count them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from durapod import AbortRun, Context, RetryAfter


def explode(payload: dict[str, Any]) -> None:
    raise ValueError(payload["why"])


def _effect(dsn: str, run: str, step: str, kind: str = "done") -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO effects (run, step, kind) VALUES (%s, %s, %s)", (run, step, kind))


def _slow_step(dsn: str, run: str, step: str, seconds: float) -> int:
    """Record the start, take ``seconds`` (a pod may die meanwhile), then the side effect."""
    _effect(dsn, run, step, "start")
    time.sleep(seconds)
    _effect(dsn, run, step)
    return int(step.rsplit("-", 1)[1])


async def steps(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """``count`` steps of ``seconds`` each; returns the sum of the step numbers."""
    total = 0
    for i in range(1, payload.get("count", 5) + 1):
        total += await ctx.step(
            f"step-{i}",
            _slow_step,
            payload["dsn"],
            ctx.name,
            f"step-{i}",
            payload.get("seconds", 0.2),
        )
    return {"total": total, "attempt": ctx.attempt}


async def hungry(payload: dict[str, Any], ctx: Context) -> str:
    await ctx.step("small", lambda: "ok")
    data = b"x" * (payload["mib"] << 20)  # over a micro machine's 256Mi, under small-1x's
    await asyncio.sleep(1.0)
    return f"held {len(data) >> 20} MiB"


async def failing(payload: dict[str, Any], ctx: Context) -> None:
    kind = payload["kind"]
    if kind == "abort":
        raise AbortRun("the order is gone")
    if kind == "retry-after" and ctx.attempt == 1:
        raise RetryAfter("1500ms", "rate limited")
    if kind == "retry-after":
        return None
    raise ValueError(f"attempt {ctx.attempt} failed")


async def big_step(payload: dict[str, Any], ctx: Context) -> None:
    await ctx.step("huge", lambda: "x" * payload["size"])


async def sleeper(payload: dict[str, Any], ctx: Context) -> str:
    await ctx.step("before", _effect, payload["dsn"], ctx.name, "before")
    await ctx.sleep(payload["sleep"])
    await ctx.step("after", _effect, payload["dsn"], ctx.name, "after")
    return "awake"


async def double(payload: dict[str, Any], ctx: Context) -> int:
    print(f"doubling {payload['n']}", flush=True)
    return int(payload["n"]) * 2


async def slow_double(payload: dict[str, Any], ctx: Context) -> int:
    await asyncio.sleep(1.5)  # long enough for a test to see the parent Waiting
    return int(payload["n"]) * 2


async def parent(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    doubled = await ctx.trigger_and_wait(payload.get("child", "double"), {"n": payload["n"]})
    return {"child said": doubled}


async def stuck(payload: dict[str, Any], ctx: Context) -> None:
    await ctx.step("started", lambda: True)
    await asyncio.sleep(60)


async def quick(payload: dict[str, Any], ctx: Context) -> int:
    first = await ctx.step("one", lambda: payload["n"])
    await asyncio.sleep(payload.get("pause", 0))
    second = await ctx.step("two", lambda: first + 1)
    return int(second)


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def _soak_step(dsn: str, run: str, step: str, key: str, pod: str, seconds: float) -> str:
    """Record that the step runs (every execution), take a while, then its side effect,
    made idempotent by the step's key: a retried step must not add a second one."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO soak_executions (run, step, pod) VALUES (%s, %s, %s)", (run, step, pod)
        )
        time.sleep(seconds)
        conn.execute(
            "INSERT INTO soak_effects (key, run, step) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO NOTHING",
            (key, run, step),
        )
    return step


async def soak(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The chaos soak's task: ``steps`` steps, each with an idempotent side effect; with
    ``hog`` it holds that many MiB during its first attempt's middle step (an OOM kill);
    with ``sleep`` it sleeps durably after step 2; with ``child`` it waits for a child run
    after step 3, and returns what the child returned."""
    import os

    pod = os.environ.get("DURAPOD_POD_INDEX", "?")
    done: list[Any] = []
    for i in range(1, payload["steps"] + 1):
        name = f"step-{i}"
        if i == 3 and payload.get("sleep"):
            await ctx.sleep(payload["sleep"])
        if i == 4 and payload.get("child"):
            done.append(await ctx.trigger_and_wait(payload["child"], {"n": payload["n"]}))
        if payload.get("hog") and ctx.attempt == 1 and i == (payload["steps"] + 1) // 2:
            hog = b"x" * (payload["hog"] << 20)
            await asyncio.sleep(5.0)  # the kubelet's memory watchdog kills the pod meanwhile
            del hog
        done.append(
            await ctx.step(
                name,
                _soak_step,
                payload["dsn"],
                ctx.name,
                name,
                ctx.idempotency_key(name),
                pod,
                payload.get("seconds", 0.3),
            )
        )
    return {"steps": done}
