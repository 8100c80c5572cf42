"""SIGTERM in a task pod: a checkpoint write in flight completes, then the runner exits 143."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from durapod.runner.context import Context
from durapod.runner.entrypoint import _on_sigterm, invoke
from durapod.testing import MemoryJournal


class SignalledJournal(MemoryJournal):
    """Receives SIGTERM in the middle of writing a checkpoint."""

    def record(self, step: str, seq: int, output: bytes, duration: float | None = None) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        super().record(step, seq, output, duration)


@pytest.fixture(autouse=True)
def _restore_sigterm() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_a_write_lets_it_finish_then_exits_143() -> None:
    journal = SignalledJournal()
    ctx = Context(run_id="r", name="n", namespace="ns", attempt=1, journal=journal)
    _on_sigterm(ctx)
    after: list[str] = []

    async def task(payload: Any, ctx: Context) -> None:
        await ctx.step("write", lambda: "kept")
        after.append("ran on")

    with pytest.raises(SystemExit) as stopped:
        invoke(task, {}, ctx)
    assert stopped.value.code == 143
    assert journal.checkpoints["write"]["output"] == "kept"  # the write completed
    assert after == []  # and nothing after it ran


def test_sigterm_outside_a_write_exits_143_at_once() -> None:
    ctx = Context(run_id="r", name="n", namespace="ns", attempt=1, journal=MemoryJournal())
    _on_sigterm(ctx)

    def task(payload: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached")

    with pytest.raises(SystemExit) as stopped:
        invoke(task, {}, ctx)
    assert stopped.value.code == 143
