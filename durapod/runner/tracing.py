"""The runner's spans: one per step that runs (a step replayed from its checkpoint makes
none) and one per checkpoint write, children of the pod's attempt span (``TRACEPARENT``).

OpenTelemetry is imported only when the ``OTEL_*`` variables the operator forwards
configure tracing and the pod has a ``TRACEPARENT``; otherwise the runner stays
standard-library only and :func:`span` costs a global lookup and a shared no-op context.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from durapod import traceparent

_OFF = contextlib.nullcontext()
_RESOURCE = {"durapod.run.id": "DURAPOD_RUN_ID", "durapod.pod.index": "DURAPOD_POD_INDEX"}
#: The tracer, once tracing is set up (an OpenTelemetry ``Tracer``).
_tracer: Any = None


def setup(env: Mapping[str, str]) -> bool:
    """Start tracing this pod's steps if ``env`` asks for it; whether it does."""
    global _tracer
    parent = traceparent.parse(env.get(traceparent.ENV))
    if parent is None or not traceparent.configured(env):
        return False
    try:
        from opentelemetry import context

        from durapod import tracing  # OpenTelemetry: only now
    except ImportError as exc:  # an image without durapod[tracing]: the task runs untraced
        logging.getLogger("durapod.runner").warning("not tracing: %s", exc)
        return False
    # The process is one pod of one run: its spans say which.
    pod = {name: env.get(var, "") for name, var in _RESOURCE.items()}
    if not tracing.setup("durapod-runner", env, pod):  # settings the SDK refused (logged)
        return False
    # The attempt span is the parent of everything this process does.
    context.attach(tracing.remote(parent))
    _tracer = tracing.tracer()
    return True


def span(name: str, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """A span around the block (its exception recorded), or nothing when tracing is off."""
    if _tracer is None:
        return _OFF
    manager: contextlib.AbstractContextManager[Any] = _tracer.start_as_current_span(
        name, attributes=attributes
    )
    return manager


def headers() -> dict[str, str]:
    """The current span as a ``traceparent`` header, for the API (a child run it starts
    joins this trace); empty when tracing is off."""
    if _tracer is None:
        return {}
    from durapod import tracing

    current = tracing.current()
    return {"traceparent": str(current)} if current is not None else {}


def flush() -> None:
    """Export the spans batched so far (before the pod exits)."""
    if _tracer is not None:
        from durapod import tracing

        tracing.flush()
