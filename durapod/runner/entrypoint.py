"""The pod entrypoint: load the task, run it with its payload, report the outcome.

Exit codes tell the operator what happened even when the report could not be sent:
0 succeeded, 1 the task raised, 2 the task could not be loaded.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from durapod.runner.api import RunApi
from durapod.runner.context import Context

EXIT_OK, EXIT_TASK_ERROR, EXIT_LOAD_ERROR = 0, 1, 2


def load(entrypoint: str) -> Callable[..., Any]:
    module_name, _, attr = entrypoint.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{entrypoint} is not callable")
    # A function decorated with @task keeps the user's function underneath.
    inner: Callable[..., Any] = getattr(fn, "__durapod_fn__", fn)
    return inner


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def invoke(fn: Callable[..., Any], payload: Any, ctx: Context) -> Any:
    """Call ``fn(payload, ctx)`` (or ``fn(payload)``), sync or async."""
    params = inspect.signature(fn).parameters
    result = fn(payload, ctx) if len(params) >= 2 else fn(payload)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def run(env: dict[str, str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = RunApi(env["DURAPOD_API_URL"], env["DURAPOD_RUN_ID"], env["DURAPOD_RUN_TOKEN"])
    info = api.context()
    ctx = Context(
        run_id=info["id"],
        name=info["name"],
        namespace=info["namespace"],
        attempt=int(info["attempt"]),
    )
    try:
        fn = load(env["DURAPOD_ENTRYPOINT"])
    except Exception as exc:
        api.report({"error": {**_error(exc), "reason": "EntrypointError"}})
        return EXIT_LOAD_ERROR
    try:
        output = invoke(fn, info["payload"], ctx)
        json.dumps(output)
    except Exception as exc:
        api.report({"error": {**_error(exc), "reason": "TaskError"}})
        return EXIT_TASK_ERROR
    api.report({"output": output})
    return EXIT_OK


def main() -> None:
    sys.exit(run(dict(os.environ)))
