"""A loopback OTLP/HTTP receiver for tests: what a collector gets, decoded.

It accepts ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` (gzip or
not), as the OpenTelemetry exporters send it, and keeps every span, thread-safely.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    #: The parent's span id; "" for a root.
    parent: str
    name: str
    attributes: dict[str, Any]
    #: The exporting process's resource (``service.name`` and the like).
    resource: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: 0 unset, 1 ok, 2 error.
    status: int = 0
    status_message: str = ""

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name", ""))

    @property
    def event_names(self) -> list[str]:
        return [name for name, _ in self.events]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        found[pair.key] = _value(pair.value)
    return found


def decode(request: ExportTraceServiceRequest) -> list[Span]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent=span.parent_span_id.hex(),
                        name=span.name,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        events=[(e.name, _attributes(e.attributes)) for e in span.events],
                        status=span.status.code,
                        status_message=span.status.message,
                    )
                )
    return spans


class Receiver:
    """The receiver on a free loopback port, serving from a thread until ``close``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver._add(decode(ExportTraceServiceRequest.FromString(body)))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output stays readable

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``); traces go to ``/v1/traces``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _add(self, spans: list[Span]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self.requests += 1

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans() if s.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
