"""How durapod's processes log: one JSON object per line, with the run being worked on.

The operator, the API and the runner each call :func:`setup` once at start. Every record
then carries ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message`` and
``component``, the fields bound by :func:`bind` where it was logged (``run_id``, ``task``,
``attempt``, ``trace_id``, ...), the ``extra`` fields of the call, and ``traceback`` when
it has an exception. ``DURAPOD_LOG_FORMAT=text`` gives plain lines for a terminal
instead; ``DURAPOD_LOG_LEVEL`` sets the level (INFO by default).

Stdlib only: the runner uses it in every task pod.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

from durapod import traceparent

FORMAT_ENV = "DURAPOD_LOG_FORMAT"
LEVEL_ENV = "DURAPOD_LOG_LEVEL"
#: The fields every JSON line has; a bound or extra field of the same name is renamed
#: with a trailing underscore rather than lost or allowed to overwrite them.
CORE = ("time", "level", "logger", "message", "component", "traceback", "stack")
#: Bounds on what a field can add to a line (a message or traceback is never cut).
MAX_CHARS = 2048
MAX_ITEMS = 32
MAX_DEPTH = 4
#: Attributes some libraries pass in ``extra`` that are no use in a log line: kopf's
#: settings object and event-posting flag, uvicorn's ANSI-coloured copy of the message.
DROPPED = frozenset({"settings", "k8s_skip", "color_message"})
#: HTTP clients that log every request at INFO (lightkube's httpx2 one per call to the
#: cluster): only their warnings are kept, or they drown what matters.
QUIET = ("httpx", "httpx2", "httpcore")
#: Renamed for readers: kopf's reference to the object a record is about.
RENAMED = MappingProxyType({"k8s_ref": "object"})
#: What every LogRecord has of its own: anything else on a record came from ``extra``.
_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_bound: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "durapod_log_fields", default=_EMPTY
)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (in this thread or task,
    and in tasks it starts); fields that are None are left out. Nested binds add up."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def bound() -> dict[str, Any]:
    """The fields bound here now."""
    return dict(_bound.get())


def trace_id(value: str | None) -> str | None:
    """The trace id (32 hex digits) of a W3C ``traceparent``, or None when it is absent
    or invalid: the field by which a log line is found from its trace and back."""
    parent = traceparent.parse(value)
    return f"{parent.trace_id:032x}" if parent is not None else None


class FieldsAdapter(logging.LoggerAdapter[logging.Logger]):
    """A LoggerAdapter whose fields and a call's own ``extra`` both reach the record (the
    stdlib's replaces the call's ``extra`` with its own before Python 3.13); the call's win."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def _bounded(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can hold it, cut to size: long strings, big or deep containers
    and unknown objects (as their ``str``) never make a line unbounded."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_CHARS else value[:MAX_CHARS] + "…"
    if depth < MAX_DEPTH and isinstance(value, Mapping):
        items = list(value.items())
        shown = {str(k): _bounded(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            shown["…"] = f"{len(items) - MAX_ITEMS} more"
        return shown
    if depth < MAX_DEPTH and isinstance(value, list | tuple | set | frozenset):
        listed = list(value)
        cut = [_bounded(v, depth + 1) for v in listed[:MAX_ITEMS]]
        return cut + ([f"… {len(listed) - MAX_ITEMS} more"] if len(listed) > MAX_ITEMS else [])
    return _bounded(str(value), depth)


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's own fields: those bound where it was logged, then its ``extra``
    (which win); None values are left out, as :func:`bind` leaves them out."""
    found: dict[str, Any] = dict(_bound.get())
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRS or key in DROPPED or key.startswith("_") or value is None:
            continue
        found[RENAMED.get(key, key)] = value
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "component": self.component,
        }
        for key, value in fields(record).items():
            line[f"{key}_" if key in CORE else key] = _bounded(value)
        if record.exc_info and record.exc_info[0] is not None:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``, and the traceback below it."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        pairs = " ".join(
            f"{k}={json.dumps(_bounded(v), ensure_ascii=False, default=str)}"
            for k, v in fields(record).items()
        )
        if pairs:
            text = f"{text} [{pairs}]"
        if record.exc_info and record.exc_info[0] is not None:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return text


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup` installs (so a second call replaces it)."""


def formatter(component: str, form: str | None = None) -> logging.Formatter:
    """The formatter for ``form`` ("json" or "text"; default: ``DURAPOD_LOG_FORMAT``)."""
    form = (form or os.environ.get(FORMAT_ENV) or "json").strip().lower()
    if form == "text":
        return TextFormatter(component)
    if form == "json":
        return JsonFormatter(component)
    raise ValueError(f"{FORMAT_ENV} must be json or text, not {form!r}")


def setup(component: str, stream: TextIO | None = None) -> None:
    """Configure root logging for a durapod process: its handlers are replaced (as
    ``logging.basicConfig(force=True)`` does) by one writing to ``stream`` (stderr) in
    the format ``DURAPOD_LOG_FORMAT`` names, at ``DURAPOD_LOG_LEVEL`` (INFO; the
    :data:`QUIET` HTTP clients at WARNING)."""
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(formatter(component))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel((os.environ.get(LEVEL_ENV) or "INFO").strip().upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)  # a library's warning is a line like the others, not text
