"""OpenTelemetry for durapod's processes: the operator, the API, and a task pod's runner.

Set up only when the standard ``OTEL_*`` variables configure an OTLP endpoint
(:func:`durapod.traceparent.configured`); otherwise :func:`setup` does nothing and every
helper here returns at its first line. Spans go to the OTLP/HTTP protobuf exporter
through a ``BatchSpanProcessor`` (its own thread: nothing waits on an export), flushed
when the process exits. Resource attributes, sampler and batch settings come from the
``OTEL_*`` variables too, as the SDK reads them; the service name is durapod's component
unless ``OTEL_SERVICE_NAME`` (or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) says.

Spans of one run are made by several processes at different times, so some are emitted
afterwards with known ids (:func:`emit`): a custom ``IdGenerator`` (the SDK's extension
point for ids) takes the span id from a context variable when one is given. FastAPI
(0.165 on) adds its own spans of each API request to the global provider set up here.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from durapod import traceparent
from durapod.traceparent import TraceParent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("durapod.tracing")
Obj = dict[str, Any]
Attributes = Mapping[str, str | int | float | bool]
#: The span id the next span gets (see :func:`emit`); None: a random one.
_next_span_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "durapod_next_span_id", default=None
)
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def setup(
    service: str, env: Mapping[str, str] = os.environ, resource: Attributes | None = None
) -> bool:
    """Start exporting this process's spans if ``env`` configures tracing; whether it does.

    ``service`` is the default ``service.name``; ``resource`` adds attributes of the
    process (a pod's run). The SDK reads its own settings (endpoint, sampler, batching)
    from the process's environment. Idempotent once it has set tracing up.
    """
    global _provider, _tracer
    if _provider is not None:
        return True
    if not traceparent.configured(env):
        return False
    try:
        _provider = _start(service, resource)
    except Exception as exc:  # a bad OTEL_* value (OTEL_BSP_MAX_QUEUE_SIZE=0), no SDK
        log.error("not tracing: %s", exc)  # the process does its work untraced
        return False
    trace.set_tracer_provider(_provider)
    _tracer = _provider.get_tracer("durapod")
    return True


def _start(service: str, resource: Attributes | None) -> TracerProvider:
    """A provider exporting over OTLP/HTTP, as the ``OTEL_*`` variables configure it."""
    # The SDK and the exporter (about 40 ms of imports) only now: tracing is on.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    from durapod import __version__

    class Ids(RandomIdGenerator):
        """Random ids, except a span id given through ``_next_span_id``."""

        def generate_span_id(self) -> int:
            return _next_span_id.get() or super().generate_span_id()

    found = Resource.create({SERVICE_VERSION: __version__, **(resource or {})})
    if str(found.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=found, id_generator=Ids())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def enabled() -> bool:
    return _tracer is not None


def tracer() -> trace.Tracer | None:
    """The tracer, once :func:`setup` has set tracing up."""
    return _tracer


def flush(timeout_seconds: float = 5.0) -> None:
    """Export what is batched now (the SDK also does at exit; a pod may not get there)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_seconds * 1000))


def remote(parent: TraceParent) -> context.Context:
    """A context whose current span is ``parent``, made by another process."""
    span = SpanContext(parent.trace_id, parent.span_id, True, TraceFlags(parent.flags))
    return trace.set_span_in_context(NonRecordingSpan(span))


def current() -> TraceParent | None:
    """The current span's trace context (None when tracing is off or there is none)."""
    span = trace.get_current_span().get_span_context()
    if _tracer is None or not span.is_valid:
        return None
    return TraceParent(span.trace_id, span.span_id, int(span.trace_flags))


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


# -- a run's root ---------------------------------------------------------------------


@dataclass
class Root:
    """A run's root span while its TaskRun (or record) is being made: its ``traceparent``
    goes with the run, and the span is exported once the run made turns out to hold it
    (:meth:`keep`, :meth:`settle`), never otherwise (a retried call found the run made
    before, with its own root; another replica made the record first)."""

    span: trace.Span | None = None
    #: A root made elsewhere (the TaskRun's annotation): no span of ours.
    given: str | None = None
    kept: bool = True

    @property
    def traceparent(self) -> str | None:
        if self.span is None:
            return self.given
        ctx = self.span.get_span_context()
        return str(TraceParent(ctx.trace_id, ctx.span_id, int(ctx.trace_flags)))

    @property
    def annotations(self) -> dict[str, str]:
        """For the TaskRun's metadata: the root it belongs to."""
        value = self.traceparent
        return {traceparent.ANNOTATION: value} if value else {}

    def keep(self, run: Obj, made: bool = True) -> None:
        """The run is made: ``run`` (a TaskRun) names it; ``made`` False: it was there."""
        if self.span is None:
            return
        meta = run["metadata"]
        if not made or traceparent.annotated(meta) != self.traceparent:
            self.kept = False
            return
        self.span.set_attributes({"durapod.run.name": meta["name"], "durapod.run.id": meta["uid"]})

    def settle(self, stored: str | None, end: datetime | None = None) -> None:
        """Export the span if ``stored`` (the run record's root) is this one, else drop it."""
        if self.span is None:
            return
        if stored == self.traceparent:
            self.span.end(_ns(end) if end else None)
        self.span = None


def begin_root(
    source: str,
    namespace: str,
    task: str,
    *,
    start: datetime | None = None,
    parent: TraceParent | None = None,
    attributes: Attributes | None = None,
) -> Root:
    """Start a run's root span (``trigger``): under ``parent`` if given (in its trace, the
    current span if it is of that trace: the request's), else in the current context (a
    caller's trace, continued), else in a new trace; ``source`` says what triggered the
    run (http, batch, webhook, replay, child, schedule, taskrun). Nothing is exported
    until :meth:`Root.settle` (or the end of :func:`root`)."""
    if _tracer is None:
        return Root()
    current = trace.get_current_span().get_span_context()
    if parent is not None and not (current.is_valid and current.trace_id == parent.trace_id):
        under: context.Context | None = remote(parent)
    else:
        under = None  # the current context
    span = _tracer.start_span(
        "trigger",
        context=under,
        start_time=_ns(start) if start else None,
        attributes={
            "durapod.trigger.source": source,
            "k8s.namespace.name": namespace,
            "durapod.task": task,
            **(attributes or {}),
        },
    )
    return Root(span)


@contextmanager
def root(
    source: str, namespace: str, task: str, parent: TraceParent | None = None
) -> Iterator[Root]:
    """A run's root span (see :func:`begin_root`) around the making of its TaskRun: it
    ends with the block, unless dropped (:meth:`Root.keep`)."""
    made = begin_root(source, namespace, task, parent=parent)
    span = made.span
    if span is None:
        yield made
        return
    try:
        yield made
    except Exception as exc:
        if made.span is not None:  # the trigger failed: its span says why
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
        raise
    if made.span is not None and made.kept:
        span.end()


# -- spans emitted afterwards -----------------------------------------------------------


@dataclass(frozen=True)
class SpanEvent:
    name: str
    at: datetime
    attributes: Attributes = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """A span that has already happened (see :func:`emit`)."""

    name: str
    start: datetime
    end: datetime
    #: Its id, when its children already name it; None: a random one.
    span_id: int | None = None
    attributes: Attributes = field(default_factory=dict)
    events: Sequence[SpanEvent] = ()
    #: Set: the span's status is ERROR, with this description.
    error: str | None = None


def emit(parent: TraceParent, done: Done) -> None:
    """Export ``done`` as a child of ``parent`` (a span of another process, or time)."""
    if _tracer is None:
        return
    token = _next_span_id.set(done.span_id)
    try:
        span = _tracer.start_span(
            done.name,
            context=remote(parent),
            start_time=_ns(done.start),
            attributes=done.attributes,
        )
    finally:
        _next_span_id.reset(token)
    for event in done.events:
        span.add_event(event.name, event.attributes, _ns(event.at))
    if done.error is not None:
        span.set_status(Status(StatusCode.ERROR, done.error))
    span.end(_ns(done.end))
