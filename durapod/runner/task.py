"""The ``@task`` decorator: a task's function, its identity and its run-time options."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from datetime import timedelta
from typing import Any, overload

from durapod.runner.retry import Retry

_ID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Task:
    """A task function with its options; calling it calls the function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        id: str,
        *,
        queue: str | None,
        retry: Retry | None,
        max_duration: timedelta | None,
        machine: str | None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@task needs a function, not {fn!r}")
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not 1 <= len(params) <= 2:
            raise TypeError(
                f"@task {fn.__qualname__}: the function must take (payload) or "
                f"(payload, ctx), not {len(params)} positional parameters"
            )
        if not _ID.match(id) or len(id) > 63:
            raise ValueError(f"@task id {id!r} must be a DNS label (a-z, 0-9, '-'; ≤63 chars)")
        self.fn = fn
        self.id = id
        self.queue = queue
        self.retry = retry
        self.max_duration = max_duration
        self.machine = machine
        self.takes_context = len(params) == 2
        hints = typing.get_type_hints(fn) if hasattr(fn, "__annotations__") else {}
        self.payload_type: Any = hints.get(params[0].name)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", id)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def parse_payload(self, payload: Any) -> Any:
        """The payload as the function's annotation asks (a pydantic model is validated)."""
        validate = getattr(self.payload_type, "model_validate", None)
        return validate(payload) if validate is not None else payload

    def definition(self, image: str, entrypoint: str) -> dict[str, Any]:
        """A TaskDefinition manifest for this task, from its options."""
        spec: dict[str, Any] = {"image": image, "entrypoint": entrypoint}
        if self.queue:
            spec["queue"] = {"name": self.queue}
        if self.retry:
            spec["retry"] = self.retry.to_spec()
        if self.max_duration:
            spec["maxDuration"] = f"{self.max_duration.total_seconds():g}s"
        if self.machine:
            spec["machine"] = self.machine
        return {
            "apiVersion": "durapod.io/v1",
            "kind": "TaskDefinition",
            "metadata": {"name": self.id},
            "spec": spec,
        }


def _default_id(fn: Callable[..., Any]) -> str:
    return re.sub(r"[^a-z0-9]+", "-", getattr(fn, "__name__", "task").lower()).strip("-")


@overload
def task(id: Callable[..., Any], /) -> Task: ...


@overload
def task(
    id: str | None = None,
    /,
    *,
    queue: str | None = None,
    retry: Retry | None = None,
    max_duration: timedelta | None = None,
    machine: str | None = None,
) -> Callable[[Callable[..., Any]], Task]: ...


def task(
    id: str | Callable[..., Any] | None = None,
    /,
    *,
    queue: str | None = None,
    retry: Retry | None = None,
    max_duration: timedelta | None = None,
    machine: str | None = None,
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Declare a task; use as ``@task`` or ``@task("id", retry=Retry(...), ...)``."""
    if callable(id):
        return Task(id, _default_id(id), queue=None, retry=None, max_duration=None, machine=None)

    def decorate(fn: Callable[..., Any]) -> Task:
        return Task(
            fn,
            id or _default_id(fn),
            queue=queue,
            retry=retry,
            max_duration=max_duration,
            machine=machine,
        )

    return decorate
