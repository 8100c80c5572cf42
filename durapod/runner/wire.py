"""How the SDK's option types travel in manifests, without importing pydantic.

``Retry`` and ``Queue`` are plain frozen dataclasses: task code builds them, and the
resource models in :mod:`durapod.resources.models` use the very same classes as fields of
``TaskDefinitionSpec``, so one type is the SDK's option, the CRD's schema and what the
operator reads. Pydantic validates stdlib dataclasses, and it finds what it needs on them
by name, so this module (and the runner with it) stays stdlib-only:

- ``__pydantic_config__`` on the class (:func:`config`): camelCase names on the wire,
  unknown fields refused, field docstrings as descriptions, and a schema hook that writes
  each field's bounds (:func:`limits`) and duration defaults into the JSON schema;
- ``__get_pydantic_core_schema__`` / ``__get_pydantic_json_schema__`` on annotation
  metadata (:data:`Duration`): a ``timedelta`` in Python, ``"1m30s"`` on the wire.

The bounds are checked by :func:`check` in each class's ``__post_init__`` (pydantic calls
it too), so the SDK refuses at decoration time what the API server would refuse, and
nothing more: an object the CRD schema admits always loads.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from durapod.durations import DURATION_PATTERN, duration_string, parse_duration

#: A Kubernetes DNS label (RFC 1123): names of tasks and queues.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: The key of a field's JSON-schema bounds in ``dataclasses.field(metadata=...)``.
SCHEMA = "durapod.io/schema"


def _timedelta(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"expected a duration such as 10s, 5m or 1h30m, not {value!r}")


class _DurationOnTheWire:
    """Annotation metadata: validate "1h30m" (or a timedelta), serialise to "1h30m"."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> dict[str, Any]:
        # pydantic-core schemas are TypedDicts: this is core_schema.no_info_plain_validator_
        # function(_timedelta, serialization=plain_serializer_function_ser_schema(...)).
        return {
            "type": "function-plain",
            "function": {"type": "no-info", "function": _timedelta},
            "serialization": {
                "type": "function-plain",
                "function": duration_string,
                "return_schema": {"type": "str"},
            },
        }

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "10m", "1h30m"]}


#: A duration: ``timedelta`` in Python, ``"1m30s"`` in manifests (see :mod:`durapod.durations`).
Duration = Annotated[timedelta, _DurationOnTheWire()]


def limits(
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    pattern: str | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Field metadata: JSON-schema bounds, enforced by :func:`check` and the CRD schema."""
    rules = {"minimum": minimum, "maximum": maximum, "pattern": pattern, "maxLength": max_length}
    return {SCHEMA: {key: value for key, value in rules.items() if value is not None}}


def check(obj: Any) -> None:
    """Refuse a field outside its :func:`limits`, or a duration that is not a timedelta."""
    where = type(obj).__name__
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(f.default, timedelta) and not isinstance(value, timedelta):
            raise TypeError(f"{where}.{f.name} must be a timedelta, not {value!r}")
        rules: dict[str, Any] = f.metadata.get(SCHEMA, {})
        if value is None:
            continue
        if "minimum" in rules and value < rules["minimum"]:
            raise ValueError(f"{where}.{f.name} must be at least {rules['minimum']}, not {value}")
        if "maximum" in rules and value > rules["maximum"]:
            raise ValueError(f"{where}.{f.name} must be at most {rules['maximum']}, not {value}")
        if "maxLength" in rules and len(value) > rules["maxLength"]:
            raise ValueError(f"{where}.{f.name} is over {rules['maxLength']} characters")
        if "pattern" in rules and not re.search(rules["pattern"], value):
            raise ValueError(
                f"{where}.{f.name} {value!r} must be a DNS label (a-z, 0-9 and '-')"
                if rules["pattern"] == DNS_LABEL
                else f"{where}.{f.name} {value!r} must match {rules['pattern']}"
            )


def camel(name: str) -> str:
    """``max_attempts`` → ``maxAttempts``."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def config(**aliases: str) -> dict[str, Any]:
    """A dataclass's ``__pydantic_config__``: camelCase (``aliases`` name the exceptions,
    like ``on_oom="onOOM"``), unknown fields refused, docstrings as descriptions."""

    def alias(name: str) -> str:
        return aliases.get(name) or camel(name)

    def schema_extra(schema: dict[str, Any], cls: type) -> None:
        properties: dict[str, Any] = schema.get("properties", {})
        for f in dataclasses.fields(cls):
            prop = properties.get(alias(f.name))
            if prop is None:
                continue
            prop.update(f.metadata.get(SCHEMA, {}))
            if isinstance(f.default, timedelta):
                prop["default"] = duration_string(f.default)

    hook: Callable[[dict[str, Any], type], None] = schema_extra
    return {
        "alias_generator": alias,
        "populate_by_name": True,
        "extra": "forbid",
        "use_attribute_docstrings": True,
        "json_schema_extra": hook,
    }
