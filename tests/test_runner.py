"""The pod entrypoint loads task functions and calls them as users write them."""

from __future__ import annotations

import pytest

from durapod.runner.context import Context
from durapod.runner.entrypoint import invoke, load

CTX = Context(run_id="r", name="n", namespace="ns", attempt=2)


def test_load_finds_module_function() -> None:
    assert load("tests.tasks:explode").__name__ == "explode"
    with pytest.raises(AttributeError):
        load("tests.tasks:nothing_here")
    with pytest.raises(ModuleNotFoundError):
        load("tests.no_such_module:f")


def test_invoke_sync_async_with_and_without_context() -> None:
    def plain(payload: dict[str, int]) -> int:
        return payload["x"] + 1

    def with_ctx(payload: dict[str, int], ctx: Context) -> int:
        return payload["x"] + ctx.attempt

    async def coroutine(payload: dict[str, int], ctx: Context) -> str:
        return f"{payload['x']}-{ctx.run_id}"

    assert invoke(plain, {"x": 1}, CTX) == 2
    assert invoke(with_ctx, {"x": 1}, CTX) == 3
    assert invoke(coroutine, {"x": 1}, CTX) == "1-r"
