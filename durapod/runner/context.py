"""What a task function receives beside its payload: its run, and durable steps.

A completed step's output is committed (one API call, one database commit) before the
step returns; on a later pod of the same run the step returns that output without
running. Sleeps and waits for child runs are durable: they unwind the task with
:class:`Suspend`, the pod exits, and a new pod resumes the run when the time comes.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from durapod import logs
from durapod.durations import parse_duration
from durapod.runner import tracing
from durapod.runner.errors import (
    CheckpointTooLargeError,
    ChildRunFailedError,
    DuplicateStepError,
    NotSerializableError,
    Suspend,
)

STATE = "$state"


class Journal(Protocol):
    """Where a run's checkpoints go: the API in a pod, memory in ``durapod.testing``."""

    def record(self, step: str, seq: int, output: bytes, duration: float | None = None) -> None: ...

    def save_state(self, seq: int, state: bytes) -> None: ...

    def trigger(self, task: str, payload: Any, name: str) -> dict[str, Any]: ...


def encode(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise NotSerializableError(f"{what} is not JSON-serialisable: {exc}") from exc


def _written(step: str, data: bytes) -> dict[str, Any]:
    """A checkpoint write's span attributes."""
    return {"durapod.step": step, "durapod.checkpoint.bytes": len(data)}


class Context:
    """The run a task function is executing for, and its durable operations."""

    def __init__(
        self,
        *,
        run_id: str,
        name: str,
        namespace: str,
        attempt: int,
        journal: Journal,
        checkpoints: list[dict[str, Any]] | None = None,
        checkpoint_limit: int = 1024 * 1024,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.run_id = run_id
        self.name = name
        self.namespace = namespace
        self.attempt = attempt
        self.checkpoint_limit = checkpoint_limit
        self._journal = journal
        self._clock = clock
        self._completed: dict[str, Any] = {}
        self._state: Any = None
        self._seq = 0
        for checkpoint in checkpoints or []:
            self._seq = max(self._seq, int(checkpoint["seq"]) + 1)
            if checkpoint["step"] == STATE:
                self._state = checkpoint["output"]
            else:
                self._completed[checkpoint["step"]] = checkpoint["output"]
        self._used: set[str] = set()
        self._counters: dict[str, int] = {}
        #: True while a checkpoint write is in flight: SIGTERM lets it finish.
        self.writing = False
        #: Set by SIGTERM during a write: exit once it is done.
        self.exit_requested = False
        #: The task's logger: its records carry the run, and the fields a call passes in
        #: ``extra`` (``ctx.logger.info("sent", extra={"order": 7})``) as their own.
        self.logger = logs.FieldsAdapter(
            logging.getLogger("durapod.task"), {"run_id": run_id, "attempt": attempt}
        )

    # -- steps -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Mark a write in flight; a SIGTERM that came meanwhile exits after it (143)."""
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.exit_requested:
            raise SystemExit(143)

    def _claim(self, name: str) -> None:
        if name in self._used:
            raise DuplicateStepError(f"step name {name!r} is used twice in run {self.name}")
        self._used.add(name)

    def _commit(self, name: str, value: Any, duration: float | None = None) -> Any:
        """Write a step's output (``duration``: how long the step ran, for the metrics)."""
        data = encode(value, f"the output of step {name!r}")
        self._check_size(name, len(data))
        with self._write(), tracing.span("checkpoint write", _written(name, data)):
            self._journal.record(name, self._seq, data, duration)
        self._seq += 1
        stored = json.loads(data)
        self._completed[name] = stored
        return stored

    def _check_size(self, name: str, size: int) -> None:
        if size > self.checkpoint_limit:
            raise CheckpointTooLargeError(
                f"step {name!r} output is {size} bytes, over the checkpoint limit of "
                f"{self.checkpoint_limit} bytes"
            )

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once for this run; later pods get its stored output.

        The output must be JSON; what is returned is its JSON round trip, the same on
        the first run and on a resume.
        """
        if not name or name.startswith("$"):
            raise ValueError(f"invalid step name {name!r}: names starting with $ are reserved")
        self._claim(name)
        if name in self._completed:
            return self._completed[name]
        with tracing.span("step", {"durapod.step": name, "durapod.attempt": self.attempt}):
            began = time.monotonic()
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return self._commit(name, result, time.monotonic() - began)

    def completed(self, name: str) -> bool:
        """Whether step ``name`` completed on an earlier pod of this run."""
        return name in self._completed

    def idempotency_key(self, name: str) -> str:
        """A key for external APIs, the same on every attempt and resume of this run."""
        return hashlib.sha256(f"{self.run_id}:{name}".encode()).hexdigest()[:32]

    # -- explicit state ----------------------------------------------------------------

    def checkpoint(self, state: Any) -> None:
        """Save ``state`` (JSON) for :meth:`restore`; the latest save wins."""
        data = encode(state, "checkpoint state")
        self._check_size(STATE, len(data))
        with self._write(), tracing.span("checkpoint write", _written(STATE, data)):
            self._journal.save_state(self._seq, data)
        self._seq += 1
        self._state = json.loads(data)

    def restore(self) -> Any:
        """The state last saved with :meth:`checkpoint` in this run, or None."""
        return self._state

    # -- durable waits -----------------------------------------------------------------

    def _next(self, kind: str) -> str:
        self._counters[kind] = self._counters.get(kind, 0) + 1
        return f"${kind}:{self._counters[kind]}"

    async def sleep(self, duration: timedelta | str | float) -> None:
        """Sleep durably: the pod exits, and a new pod carries on after ``duration``."""
        if isinstance(duration, str):
            duration = parse_duration(duration)
        elif not isinstance(duration, timedelta):
            duration = timedelta(seconds=duration)
        await self._sleep(lambda: self._clock() + duration)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep durably until ``when`` (timezone-aware)."""
        if when.tzinfo is None:
            raise ValueError("sleep_until needs a timezone-aware datetime")
        await self._sleep(lambda: when)

    async def _sleep(self, until: Callable[[], datetime]) -> None:
        name = self._next("sleep")
        self._claim(name)
        if name in self._completed:
            wake = self._completed[name]["until"]
        else:
            wake = self._commit(name, {"until": until().astimezone(UTC).isoformat()})["until"]
        if self._clock() < datetime.fromisoformat(wake):
            raise Suspend(until=wake)

    # -- child runs --------------------------------------------------------------------

    async def trigger(self, task: str, payload: Any = None, *, key: str | None = None) -> str:
        """Start a run of ``task`` once for this run (also across resumes); return its name."""
        name = f"$trigger:{key}" if key else self._next("trigger")
        self._claim(name)
        if name in self._completed:
            child: str = self._completed[name]["name"]
            return child
        digest = hashlib.sha256(f"{self.run_id}:{name}".encode()).hexdigest()[:8]
        wanted = f"{self.name[:200]}-{digest}"
        with self._write():
            created = self._journal.trigger(task, payload or {}, wanted)
        recorded: str = self._commit(name, {"name": created["name"]})["name"]
        return recorded

    async def trigger_and_wait(
        self, task: str, payload: Any = None, *, key: str | None = None
    ) -> Any:
        """Start a child run and wait for it durably; return its output.

        Raises :class:`ChildRunFailedError` when the child does not succeed.
        """
        child = await self.trigger(task, payload, key=key)
        name = f"$wait:{child}"
        self._claim(name)
        if name not in self._completed:
            raise Suspend(child=child)
        outcome = self._completed[name]
        if outcome.get("error"):
            raise ChildRunFailedError(child, outcome["error"])
        return outcome.get("output")
