"""Decoding a built-in object the way kube-apiserver's JSON decoder does.

A built-in kind is decoded into its Go struct before anything else happens, so the real
server's first line of refusal is the decoder's: a value of the wrong type or a malformed
quantity is a 400 ("Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal
string into Go struct field PodSpec.spec.restartPolicy ..."), an unknown field is dropped,
warned about or refused as ``fieldValidation`` asks (sigs.k8s.io/json's strict mode, with
its paths: ``spec.containers[0].foo``). The walk follows the upstream schema of the kind
(``builtins``), in document order as the Go decoder does; what it returns is the object as
the server would store it: unknown fields and nulls gone, quantities and times in their
canonical forms.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from durapod.dev.apiserver import builtins, errors, quantities
from durapod.dev.apiserver.registry import ResourceType

_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
_MICRO_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
_RFC3339 = "2006-01-02T15:04:05Z07:00"
_RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"
_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)
_MICRO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})(Z|[+-]\d{2}:\d{2})$"
)
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class DecodeError(errors.StatusError):
    """The Go decoder refused the body; ``cause`` is its message, ``strict`` says whether
    only unknown fields (under ``fieldValidation=Strict``) are to blame."""

    def __init__(self, rt: ResourceType, cause: str, strict: bool) -> None:
        super().__init__(
            400,
            "BadRequest",
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {cause}',
        )
        self.cause = cause
        self.strict = strict


class _Abort(Exception):
    """A custom unmarshaller (quantity, time, int-or-string) failed: decoding stops."""


@dataclass
class _State:
    unknown: list[str] = field(default_factory=list)
    #: The first type error; Go's decoder keeps going but reports only the first.
    type_error: str | None = None


@dataclass(frozen=True)
class _Context:
    """Where the walk is, in the two forms Go reports: the strict path
    (``spec.containers[0].image``) and the error context (the innermost struct and the
    struct-field stack, ``Container`` / ``spec.containers.image``)."""

    path: str = ""
    struct: str = ""
    stack: str = ""

    def key(self, name: str) -> _Context:
        return _Context(f"{self.path}.{name}" if self.path else name, self.struct, self.stack)

    def field(self, struct: str, name: str) -> _Context:
        stack = f"{self.stack}.{name}" if self.stack else name
        return _Context(f"{self.path}.{name}" if self.path else name, struct, stack)

    def index(self, i: int) -> _Context:
        return _Context(f"{self.path}[{i}]", self.struct, self.stack)


def decode(rt: ResourceType, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``body`` as the real server decodes it, and the paths of its unknown fields.

    Raises DecodeError (400) for a wrong type or a malformed value. Unknown fields are
    returned, not raised: what to do with them depends on ``fieldValidation``.
    """
    name = builtins.definition_name(rt.group, rt.version, rt.kind)
    if name is None:
        return body, []
    state = _State()
    try:
        decoded = _object(body, name, builtins.definitions()[name], _Context(), state)
    except _Abort as exc:
        raise DecodeError(rt, str(exc), strict=False) from None
    if state.type_error is not None:
        raise DecodeError(rt, state.type_error, strict=False)
    return decoded, state.unknown


def strict_error(rt: ResourceType, unknown: list[str]) -> DecodeError:
    """The 400 of ``fieldValidation=Strict`` for these unknown fields."""
    detail = ", ".join(f"unknown field {json.dumps(path)}" for path in unknown)
    return DecodeError(rt, f"strict decoding error: {detail}", strict=True)


# -- the walk ----------------------------------------------------------------------------


def _go_type(schema: dict[str, Any]) -> str:
    """The Go type a schema stands for, as reflect prints it in decoding errors.

    Named string types (``v1.RestartPolicy``) cannot be told from the schema; they print
    as ``string`` here.
    """
    if (name := builtins.ref_name(schema)) is not None:
        parts = name.split(".")
        target = builtins.definitions()[name]
        if name not in (_QUANTITY, _INT_OR_STRING) and builtins.types_of(target) != ("object",):
            return _go_type(target)
        return f"{parts[-2]}.{parts[-1]}"
    kinds = builtins.types_of(schema)
    if kinds == ("array",):
        return "[]" + _go_type(schema.get("items") or {})
    if kinds == ("object",):
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return "map[string]" + _go_type(extra)
        return "map[string]interface {}"
    if kinds == ("string",):
        return "[]uint8" if schema.get("format") == "byte" else "string"
    if kinds == ("integer",):
        return str(schema.get("format") or "int")
    if kinds == ("number",):
        return "float64"
    if kinds == ("boolean",):
        return "bool"
    return "interface {}"


def _json_kind(value: Any) -> str:
    """How Go's decoder names the JSON value it could not store."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "number"


def _type_error(state: _State, ctx: _Context, value: Any, schema: dict[str, Any]) -> None:
    if state.type_error is not None:
        return
    shown = _json_kind(value)
    if shown == "number" and builtins.types_of(schema) == ("integer",):
        shown = f"number {json.dumps(value)}"
    go_type = _go_type(schema)
    where = f"Go struct field {ctx.struct}.{ctx.stack}" if ctx.struct or ctx.stack else "Go value"
    state.type_error = f"json: cannot unmarshal {shown} into {where} of type {go_type}"


def _value(value: Any, schema: dict[str, Any], ctx: _Context, state: _State) -> Any:
    name = builtins.ref_name(schema)
    if name == _QUANTITY:
        try:
            return str(quantities.from_json(value))
        except quantities.QuantityError as exc:
            raise _Abort(str(exc)) from None
    if name == _INT_OR_STRING:
        return _int_or_string(value)
    if name in (_TIME, _MICRO_TIME):
        return _time(value, micro=name == _MICRO_TIME)
    if name is not None:
        target = builtins.definitions()[name]
        if builtins.types_of(target) == ("object",) and "properties" in target:
            return _object(value, name, target, ctx, state)
        return _value(value, target, ctx, state)
    return _plain(value, schema, ctx, state)


def _plain(value: Any, schema: dict[str, Any], ctx: _Context, state: _State) -> Any:
    kinds = builtins.types_of(schema)
    if not kinds:
        return value  # RawExtension, JSON: any value goes
    kind = kinds[0]
    if kind == "object":
        if not isinstance(value, dict):
            _type_error(state, ctx, value, schema)
            return value
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {k: _item(v, extra, ctx.key(k), state) for k, v in value.items()}
        return value
    if kind == "array":
        if not isinstance(value, list):
            _type_error(state, ctx, value, schema)
            return value
        items = schema.get("items") or {}
        return [_item(v, items, ctx.index(i), state) for i, v in enumerate(value)]
    if kind == "string":
        if not isinstance(value, str):
            _type_error(state, ctx, value, schema)
        elif schema.get("format") == "byte":
            _check_base64(value, state)
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            _type_error(state, ctx, value, schema)
        return value
    if kind == "integer":
        low, high = _INT_RANGES.get(str(schema.get("format")), _INT_RANGES["int64"])
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or not low <= value <= high:
            _type_error(state, ctx, value, schema)
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _type_error(state, ctx, value, schema)
        return value
    return value


def _item(value: Any, schema: dict[str, Any], ctx: _Context, state: _State) -> Any:
    """A list element or map value: a null becomes the zero value, as in Go."""
    if value is None:
        return _zero(schema)
    return _value(value, schema, ctx, state)


def _zero(schema: dict[str, Any]) -> Any:
    target = builtins.resolve(schema)
    kinds = builtins.types_of(target)
    zeros: dict[str, Any] = {
        "object": {},
        "string": "",
        "integer": 0,
        "number": 0,
        "boolean": False,
    }
    return zeros.get(kinds[0]) if kinds else None


def _object(value: Any, name: str, schema: dict[str, Any], ctx: _Context, state: _State) -> Any:
    if not isinstance(value, dict):
        _type_error(state, ctx, value, {"$ref": f"#/$defs/{name}"})
        return value
    struct = name.rsplit(".", 1)[-1]
    properties: dict[str, Any] = schema.get("properties") or {}
    result: dict[str, Any] = {}
    for key, item in value.items():
        sub = properties.get(key)
        if sub is None:
            state.unknown.append(ctx.key(key).path)
            continue
        if item is None:
            # Go leaves a nil; only times serialise a zero value back as null.
            if builtins.ref_name(sub) in (_TIME, _MICRO_TIME):
                result[key] = None
            continue
        result[key] = _value(item, sub, ctx.field(struct, key), state)
    return result


# -- custom unmarshallers ----------------------------------------------------------------


def _int_or_string(value: Any) -> Any:
    """intstr.IntOrString's UnmarshalJSON: a quoted string, else an int32."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        return value
    shown = f"number {json.dumps(value)}" if isinstance(value, (int, float)) else _json_kind(value)
    if isinstance(value, bool):
        shown = "bool"
    raise _Abort(f"json: cannot unmarshal {shown} into Go value of type int32")


def _time(value: Any, micro: bool) -> str:
    """metav1.Time (RFC 3339, whole seconds, UTC) or MicroTime (exactly six fraction
    digits), with time.Parse's messages for the usual mistakes."""
    if not isinstance(value, str):
        raise _Abort(f"json: cannot unmarshal {_json_kind(value)} into Go value of type string")
    layout = _RFC3339_MICRO if micro else _RFC3339
    prefix = f'parsing time "{value}" as "{layout}": cannot parse'
    if not _TIME_RE.match(value):
        raise _Abort(f'{prefix} "{value}" as "2006"')
    if micro and not _MICRO_RE.match(value):
        raise _Abort(f'{prefix} "{value[19:]}" as ".000000"')
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Abort(f'parsing time "{value}": month out of range') from None
    parsed = parsed.astimezone(UTC)
    if micro:
        return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_base64(value: str, state: _State) -> None:
    """[]byte fields are standard base64 with padding; Go names the first bad byte."""
    if state.type_error is not None:
        return
    try:
        base64.b64decode(value, validate=True)
        return
    except (binascii.Error, ValueError):
        pass
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    position = next((i for i, c in enumerate(value) if c not in alphabet), len(value))
    if position == len(value) or value[position] == "=":
        # Missing or misplaced padding: Go reports the quantum where input ran short.
        position = len(value) - len(value) % 4 if len(value) % 4 else position
    state.type_error = f"illegal base64 data at input byte {position}"


# -- patches -----------------------------------------------------------------------------


def _go_format(value: Any) -> str:
    """A decoded JSON value as Go's ``%+v`` prints it (maps sorted, slices spaced)."""
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{_go_format(value[k])}" for k in sorted(value))
        return f"map[{inner}]"
    if isinstance(value, list):
        return "[" + " ".join(_go_format(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def patch_error(exc: DecodeError, strategic: bool, patched: Any, raw: bytes) -> errors.StatusError:
    """How a decoding failure after a JSON, merge or strategic merge patch is reported:
    a 422 on the field ``patch`` whose value is the patched object (JSON and merge) or the
    patch itself (strategic), as apiserver's patch handler words it."""
    if strategic:
        try:
            shown = _go_format(json.loads(raw))
        except ValueError:
            shown = raw.decode(errors="replace")
    else:
        shown = json.dumps(patched, separators=(",", ":"), sort_keys=True)
    cause = {
        "reason": "FieldValueInvalid",
        "field": "patch",
        "message": f"Invalid value: {json.dumps(shown)}: {exc.cause}",
    }
    return errors.invalid("", "", "", [cause])
