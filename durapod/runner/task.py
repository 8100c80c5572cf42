"""The ``@task`` decorator: a task's function, its identity and its run-time options.

The options are what ``durapod definitions`` writes into the task's TaskDefinition (see
:mod:`durapod.resources.definitions`): the queue, the retry policy, the machine, the time
limits and the payload's JSON schema, taken from the payload's pydantic model. The
decorated function keeps its signature for type checkers: ``Task[P, R]`` is called like
the function it wraps.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from durapod.runner.queues import Queue
from durapod.runner.retry import Retry
from durapod.runner.wire import DNS_LABEL

P = ParamSpec("P")
R = TypeVar("R", covariant=True)


class Task(Generic[P, R]):
    """A task function with its options; calling it calls the function."""

    def __init__(
        self,
        fn: Callable[P, R],
        id: str,
        *,
        queue: str | Queue | None = None,
        retry: Retry | None = None,
        machine: str | None = None,
        max_duration: timedelta | None = None,
        ttl: timedelta | None = None,
        start_deadline: timedelta | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@task needs a function, not {fn!r}")
        name = getattr(fn, "__qualname__", repr(fn))
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not 1 <= len(params) <= 2:
            raise TypeError(
                f"@task {name}: the function must take (payload) or "
                f"(payload, ctx), not {len(params)} positional parameters"
            )
        if not re.match(DNS_LABEL, id) or len(id) > 63:
            raise ValueError(f"@task id {id!r} must be a DNS label (a-z, 0-9, '-'; ≤63 chars)")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"@task {id}: retry must be a durapod.Retry, not {retry!r}")
        if retry is not None and retry.min_delay > retry.max_delay:
            raise ValueError(f"@task {id}: the retry's min_delay exceeds its max_delay")
        for option, value in (
            ("max_duration", max_duration),
            ("ttl", ttl),
            ("start_deadline", start_deadline),
        ):
            if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
                raise ValueError(f"@task {id}: {option} must be a positive timedelta")
        self.fn = fn
        self.id = id
        #: The queue its runs wait in (``None``: the TaskDefinition's default).
        self.queue = Queue(queue) if isinstance(queue, str) else queue
        self.retry = retry
        self.machine = machine
        self.max_duration = max_duration
        self.ttl = ttl
        self.start_deadline = start_deadline
        self.takes_context = len(params) == 2
        hints = typing.get_type_hints(fn) if hasattr(fn, "__annotations__") else {}
        #: The payload parameter's annotation (a pydantic model is validated in the pod,
        #: and its JSON schema becomes the TaskDefinition's ``payloadSchema``).
        self.payload_type: Any = hints.get(params[0].name)
        functools.update_wrapper(self, fn)  # __module__, __name__, __doc__, __wrapped__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.id} {getattr(self.fn, '__qualname__', self.fn)}>"

    def parse_payload(self, payload: Any) -> Any:
        """The payload as the function's annotation asks (a pydantic model is validated)."""
        validate = getattr(self.payload_type, "model_validate", None)
        return validate(payload) if validate is not None else payload


def _default_id(fn: Callable[..., Any]) -> str:
    return re.sub(r"[^a-z0-9]+", "-", getattr(fn, "__name__", "task").lower()).strip("-")


@overload
def task(id: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    id: str | None = None,
    /,
    *,
    queue: str | Queue | None = None,
    retry: Retry | None = None,
    machine: str | None = None,
    max_duration: timedelta | None = None,
    ttl: timedelta | None = None,
    start_deadline: timedelta | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    id: str | Callable[P, R] | None = None,
    /,
    *,
    queue: str | Queue | None = None,
    retry: Retry | None = None,
    machine: str | None = None,
    max_duration: timedelta | None = None,
    ttl: timedelta | None = None,
    start_deadline: timedelta | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Declare a task; use as ``@task`` or ``@task("id", retry=Retry(...), ...)``.

    Args:
        id: The task's name (its TaskDefinition's), a DNS label; the function's name
            (``process_order`` → ``process-order``) when not given.
        queue: The queue its runs wait in: a name, or a :class:`Queue` with limits.
        retry: How task errors are retried (the TaskDefinition's default: 3 attempts).
        machine: The machine preset (``micro``, ``small-1x`` ... ``large-2x``).
        max_duration: Time out a run that has run this long in all.
        ttl: Keep finished runs this long.
        start_deadline: Fail a run whose pod cannot start for this long.
    """
    if callable(id):
        return Task(id, _default_id(id))

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        return Task(
            fn,
            id or _default_id(fn),
            queue=queue,
            retry=retry,
            machine=machine,
            max_duration=max_duration,
            ttl=ttl,
            start_deadline=start_deadline,
        )

    return decorate
