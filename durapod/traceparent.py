"""W3C trace context as durapod carries it from a run's trigger to its pods' steps.

A run's trace starts where it is triggered: its root span's ``traceparent`` goes into the
TaskRun annotation ``durapod.io/traceparent`` and from there, once, into the run record.
Each attempt's span id is derived from (run id, pod index), so the operator can hand it to
the pod (env ``TRACEPARENT``) before the pod starts and emit the span, with that id, once
the pod has ended; the runner's step spans are its children.

Standard library only, and pure: the runner decides with :func:`configured` whether to
import OpenTelemetry at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The TaskRun annotation holding the run's root span (its trigger's).
ANNOTATION = "durapod.io/traceparent"
#: A task pod's parent span: its attempt's.
ENV = "TRACEPARENT"
SAMPLED = 0x01
_HEADER = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
#: OTEL_* variables never copied into task pods: credentials (headers) and file paths
#: that exist in the operator's container, not in a task's image.
_NOT_FORWARDED = ("_HEADERS", "_CERTIFICATE", "_CLIENT_KEY", "_CLIENT_CERTIFICATE")


@dataclass(frozen=True)
class TraceParent:
    trace_id: int
    span_id: int
    flags: int = SAMPLED

    def __str__(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"

    def child(self, span_id: int) -> TraceParent:
        """The same trace and sampling decision, with ``span_id`` as the parent."""
        return TraceParent(self.trace_id, span_id, self.flags)


def parse(value: str | None) -> TraceParent | None:
    """A ``traceparent`` header value, or None when absent or invalid (W3C Trace Context:
    version ``ff`` and all-zero ids are invalid; a later version may append fields)."""
    if not value:
        return None
    found = _HEADER.match(value.strip())
    if found is None:
        return None
    version, trace, span, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return TraceParent(trace_id, span_id, int(flags, 16))


def annotated(metadata: Mapping[str, object]) -> str | None:
    """The root ``traceparent`` a TaskRun's metadata names (normalised), or None."""
    annotations = metadata.get("annotations")
    value = annotations.get(ANNOTATION) if isinstance(annotations, Mapping) else None
    parsed = parse(value) if isinstance(value, str) else None
    return str(parsed) if parsed is not None else None


def derived_span_id(*parts: object) -> int:
    """A span id that every process computes alike from ``parts`` (never the invalid 0)."""
    text = "/".join(str(p) for p in parts).encode()
    digest = hashlib.blake2b(text, digest_size=8, person=b"durapod-span").digest()
    return int.from_bytes(digest, "big") or 1


def attempt_span_id(run_id: object, pod: int) -> int:
    """The span id of the attempt run by pod ``pod`` of run ``run_id``."""
    return derived_span_id(run_id, "pod", pod)


def attempt(root: TraceParent, run_id: object, pod: int) -> TraceParent:
    """The ``TRACEPARENT`` a run's pod gets: its attempt span, in the root's trace."""
    return root.child(attempt_span_id(run_id, pod))


def configured(env: Mapping[str, str]) -> bool:
    """Whether the standard ``OTEL_*`` variables ask for traces exported over OTLP: an
    endpoint is set, the SDK is not disabled and the traces exporter is not ``none``."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if not exporters & {"otlp", "otlp_proto_http"}:  # the SDK's generic and Python's own name
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def pod_env(
    env: Mapping[str, str], given: Iterable[str], service: str, parent: str | None
) -> list[dict[str, str]]:
    """A task pod's tracing variables, after the TaskDefinition's own (``given`` names):
    the operator's ``OTEL_*`` (none the definition sets, no credentials or file paths),
    ``OTEL_SERVICE_NAME`` the task's name, and ``TRACEPARENT`` its attempt span. Nothing
    unless ``env`` (the operator's) configures tracing."""
    if not configured(env):
        return []
    taken = set(given)
    values = {
        name: value
        for name, value in sorted(env.items())
        if name.startswith("OTEL_") and not name.endswith(_NOT_FORWARDED) and name not in taken
    }
    if "OTEL_SERVICE_NAME" not in taken:
        values["OTEL_SERVICE_NAME"] = service
    if parent is not None and ENV not in taken:
        values[ENV] = parent
    return [{"name": name, "value": value} for name, value in values.items()]
