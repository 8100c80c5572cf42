"""Unit-test tasks without a cluster: run them against an in-memory journal.

``TaskHarness`` plays the run's pods one at a time. Checkpoints survive between plays,
so a test can stop a run after any step (as a crash or an eviction would) and resume
it, sleep through durable sleeps with a fake clock, and answer child runs::

    harness = TaskHarness(process_order, {"id": 7})
    first = harness.run(crash_after="charge")     # the pod dies after step "charge"
    assert first.status == "crashed"
    second = harness.run()                        # a new pod: "charge" does not run again
    assert second.status == "succeeded"
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from durapod.runner.context import Context
from durapod.runner.entrypoint import invoke
from durapod.runner.errors import Suspend


class _PodDied(BaseException):
    """Ends a play right after a chosen step committed, as a killed pod would."""


@dataclass
class Result:
    """How one play of the run ended."""

    status: Literal["succeeded", "failed", "suspended", "crashed"]
    output: Any = None
    error: BaseException | None = None
    #: For "suspended": {"until": iso time} or {"child": run name}.
    suspend: dict[str, Any] | None = None


@dataclass
class MemoryJournal:
    """Checkpoints and child runs kept in memory (what the API stores in a cluster)."""

    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: list[dict[str, Any]] = field(default_factory=list)
    die_after: str | None = None
    #: How long each step ran, as the runner measured it (what the API's metrics get).
    durations: dict[str, float] = field(default_factory=dict)

    def record(self, step: str, seq: int, output: bytes, duration: float | None = None) -> None:
        self.checkpoints.setdefault(step, {"step": step, "seq": seq, "output": json.loads(output)})
        if duration is not None:
            self.durations[step] = duration
        if step == self.die_after:
            raise _PodDied(step)

    def save_state(self, seq: int, state: bytes) -> None:
        current = self.checkpoints.get("$state")
        if current is None or current["seq"] < seq:
            self.checkpoints["$state"] = {"step": "$state", "seq": seq, "output": json.loads(state)}

    def trigger(self, task: str, payload: Any, name: str) -> dict[str, Any]:
        if not any(c["name"] == name for c in self.children):
            self.children.append({"task": task, "payload": payload, "name": name})
        return {"name": name}


class TaskHarness:
    """Plays a task's run pod by pod, keeping its checkpoints between plays."""

    def __init__(
        self,
        fn: Callable[..., Any],
        payload: Any = None,
        *,
        run_id: str = "test-run",
        name: str = "test-run",
        namespace: str = "default",
        checkpoint_limit: int = 1024 * 1024,
        now: datetime | None = None,
    ) -> None:
        self.fn = fn
        self.payload = payload if payload is not None else {}
        self.run_id, self.name, self.namespace = run_id, name, namespace
        self.checkpoint_limit = checkpoint_limit
        self.journal = MemoryJournal()
        self.now = now or datetime.now(UTC)
        self.attempt = 1
        self.plays = 0

    def advance(self, delta: timedelta) -> None:
        """Move the harness's clock (for durable sleeps)."""
        self.now += delta

    def finish_child(
        self, name: str, output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        """Report a child run's end, as the operator does for ``trigger_and_wait``."""
        outcome = {"error": error} if error is not None else {"output": output}
        seq = len(self.journal.checkpoints)
        self.journal.checkpoints[f"$wait:{name}"] = {
            "step": f"$wait:{name}",
            "seq": seq,
            "output": outcome,
        }

    def run(self, *, crash_after: str | None = None) -> Result:
        """One pod: run the task from the checkpoints so far; optionally die after a step."""
        self.plays += 1
        self.journal.die_after = crash_after
        ctx = Context(
            run_id=self.run_id,
            name=self.name,
            namespace=self.namespace,
            attempt=self.attempt,
            journal=self.journal,
            checkpoints=sorted(self.journal.checkpoints.values(), key=lambda c: int(c["seq"])),
            checkpoint_limit=self.checkpoint_limit,
            clock=lambda: self.now,
        )
        try:
            output = invoke(self.fn, self.payload, ctx)
        except _PodDied:
            return Result("crashed")
        except Suspend as suspend:
            return Result("suspended", suspend=suspend.report())
        except Exception as exc:
            return Result("failed", error=exc)
        return Result("succeeded", output=json.loads(json.dumps(output)))

    def run_to_end(self, max_plays: int = 100) -> Result:
        """Play until the run ends, sleeping through durable sleeps on the fake clock."""
        for _ in range(max_plays):
            result = self.run()
            if result.status != "suspended":
                return result
            assert result.suspend is not None
            if "until" not in result.suspend:
                return result  # waiting for a child: the test answers with finish_child
            self.now = max(self.now, datetime.fromisoformat(result.suspend["until"]))
        raise AssertionError(f"the run did not end within {max_plays} plays")
