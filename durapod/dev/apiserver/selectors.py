"""Label and field selectors, as ``?labelSelector=`` and ``?fieldSelector=`` carry them.

Field selectors work only on the fields the real server indexes for each kind (its field
label conversion functions: ``metadata.name`` and ``metadata.namespace`` everywhere, a few
more for pods, events, secrets, namespaces, nodes, services, and a custom resource's
``selectableFields``); any other field is a 400, worded as kube-apiserver words it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from durapod.dev.apiserver import metadata
from durapod.dev.apiserver.errors import bad_request

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]
Getter = Callable[[Obj], str]

_SET_TERM = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _requirement_error(path: str, value: str, problems: list[str]) -> Exception:
    shown = value.replace("\\", "\\\\").replace('"', '\\"')
    return bad_request(
        f'unable to parse requirement: {path}: Invalid value: "{shown}": {"; ".join(problems)}'
    )


def _checked(key: str, values: Sequence[str]) -> None:
    """labels.NewRequirement's checks: a qualified-name key, label values."""
    if problems := metadata.qualified_name(key):
        raise _requirement_error("key", key, problems)
    for i, value in enumerate(values):
        if problems := metadata.label_value(value):
            raise _requirement_error(f"values[{i}][{key}]", value, problems)


def _label_term(term: str) -> Predicate:
    if match := _SET_TERM.match(term):
        key, op, raw = match.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        _checked(key, sorted(values))
        if not values:
            raise _requirement_error(
                "values", "", ["for 'in', 'notin' operators, values set can't be empty"]
            )
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (part.strip() for part in term.split(op, 1))
            _checked(key, [value])
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    for op in (">", "<"):
        if op in term:
            key, value = (part.strip() for part in term.split(op, 1))
            _checked(key, [])
            if not re.fullmatch(r"-?\d+", value):
                raise _requirement_error(
                    "values[0]", value, ["for 'Gt', 'Lt' operators, the value must be an integer"]
                )
            return _compare(key, int(value), op)
    if term.startswith("!"):
        key = term[1:].strip()
        _checked(key, [])
        return lambda labels: key not in labels
    if re.fullmatch(r"[^\s!=(),]+", term):
        _checked(term, [])
        return lambda labels: term in labels
    word = term.split()[-1] if term.split() else term
    raise bad_request(
        f"unable to parse requirement: found '{word}', expected: in, notin, =, ==, !=, gt, lt"
    )


def _compare(key: str, bound: int, op: str) -> Predicate:
    """The ``gt``/``lt`` requirements: labels that are integers beyond ``bound``."""

    def holds(labels: Obj) -> bool:
        value = labels.get(key)
        if value is None or not re.fullmatch(r"-?\d+", str(value)):
            return False
        return int(value) > bound if op == ">" else int(value) < bound

    return holds


def label_selector(text: str | None) -> Predicate:
    if not text:
        return lambda obj: True
    terms = [_label_term(t) for t in _split_terms(text)]

    def matches(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(term(labels) for term in terms)

    return matches


def field_value(obj: Any, path: str) -> str:
    """A field as its selector compares it: text, ``true``/``false``, or empty."""
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _at(path: str) -> Getter:
    return lambda obj: field_value(obj, path)


def _first_pod_ip(pod: Obj) -> str:
    status = pod.get("status") or {}
    ips = status.get("podIPs") or []
    return str(ips[0].get("ip", "")) if ips else str(status.get("podIP") or "")


def _event_source(event: Obj) -> str:
    return field_value(event, "source.component") or field_value(event, "reportingComponent")


def _flag(path: str) -> Getter:
    """A boolean field the server reports as ``false`` when unset."""
    return lambda obj: field_value(obj, path) or "false"


@dataclass(frozen=True)
class Fields:
    """The field labels a kind supports, how each is read, and the refusal's wording."""

    getters: Mapping[str, Getter]
    #: Kinds without a conversion function of their own are refused with the generic
    #: message of runtime.DefaultMetaV1FieldSelectorConversion.
    generic: bool = False

    def refusal(self, label: str) -> str:
        if self.generic:
            return (
                f'"{label}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        return f"field label not supported: {label}"


_NAME = {"metadata.name": _at("metadata.name")}
_NAMESPACED = {**_NAME, "metadata.namespace": _at("metadata.namespace")}
_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")

#: The kinds with their own field label conversion (kubernetes pkg/apis/*/v1/conversion.go,
#: and the strategies' ToSelectableFields for how each value is read).
_BUILTIN: dict[str, Fields] = {
    "/pods": Fields(
        {
            **_NAMESPACED,
            "spec.nodeName": _at("spec.nodeName"),
            "spec.host": _at("spec.nodeName"),  # old clients' name for spec.nodeName
            "spec.restartPolicy": _at("spec.restartPolicy"),
            "spec.schedulerName": _at("spec.schedulerName"),
            "spec.serviceAccountName": _at("spec.serviceAccountName"),
            "spec.hostNetwork": _flag("spec.hostNetwork"),
            "status.phase": _at("status.phase"),
            "status.podIP": _first_pod_ip,
            # Accepted, but not in the pod's selectable field set: only "" matches.
            "status.podIPs": lambda pod: "",
            "status.nominatedNodeName": _at("status.nominatedNodeName"),
        }
    ),
    "/events": Fields(
        {
            **_NAMESPACED,
            **{f"involvedObject.{f}": _at(f"involvedObject.{f}") for f in _INVOLVED},
            "reason": _at("reason"),
            "reportingComponent": _at("reportingComponent"),
            "source": _event_source,
            "type": _at("type"),
        }
    ),
    "events.k8s.io/events": Fields(
        {
            **_NAMESPACED,
            **{f"regarding.{f}": _at(f"regarding.{f}") for f in _INVOLVED},
            "reason": _at("reason"),
            "reportingController": _at("reportingController"),
            "source": lambda e: (
                field_value(e, "deprecatedSource.component")
                or field_value(e, "reportingController")
            ),
            "type": _at("type"),
        }
    ),
    "/secrets": Fields({**_NAMESPACED, "type": _at("type")}),
    "/namespaces": Fields({**_NAME, "status.phase": _at("status.phase")}),
    "/nodes": Fields({**_NAME, "spec.unschedulable": _flag("spec.unschedulable")}),
    "/services": Fields(
        {**_NAMESPACED, "spec.clusterIP": _at("spec.clusterIP"), "spec.type": _at("spec.type")}
    ),
    "apps/replicasets": Fields({**_NAMESPACED, "status.replicas": _at("status.replicas")}),
    "batch/jobs": Fields({**_NAMESPACED, "status.successful": _at("status.successful")}),
}


def supported_fields(
    key: str, namespaced: bool, custom: bool, selectable: Sequence[str] = ()
) -> Fields:
    """The fields a kind can be selected by: built-ins as their conversion functions
    say; a custom resource by name, namespace (if namespaced) and the ``selectableFields``
    (JSONPaths) of its CRD version, as apiextensions' crConverter does."""
    if key in _BUILTIN:
        return _BUILTIN[key]
    if custom:
        getters = dict(_NAMESPACED if namespaced else _NAME)
        for path in selectable:
            label = path.lstrip(".")
            getters[label] = _at(label)
        return Fields(getters)
    return Fields(_NAMESPACED, generic=True)


_FIELD_OPERATORS = ("!=", "==", "=")


def _split_field_terms(text: str) -> list[str]:
    """fields.splitTerms: commas split terms unless escaped with a backslash."""
    terms, start, escaped = [], 0, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _unescape(value: str) -> str:
    """fields.UnescapeValue: ``\\\\``, ``\\,`` and ``\\=`` only; bare ``,`` or ``=`` refused."""
    out, escaped = [], False
    for char in value:
        if escaped:
            if char not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence: \\{char}")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            raise bad_request(f"invalid field selector: unescaped character in value: {ord(char)}")
        else:
            out.append(char)
    if escaped:
        raise bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _field_term(selector: str, term: str) -> tuple[str, bool, str]:
    for i in range(len(term)):
        for op in _FIELD_OPERATORS:
            if term.startswith(op, i):
                return term[:i].strip(), op != "!=", _unescape(term[i + len(op) :].strip())
    raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")


def field_selector(text: str | None, fields: Fields | None = None) -> Predicate:
    """A predicate for ``text``; with ``fields``, a field the kind does not support is
    refused (400) rather than compared."""
    if not text:
        return lambda obj: True
    terms = [_field_term(text, t) for t in _split_field_terms(text) if t]
    getters: dict[str, Getter] = {}
    for label, _, _ in terms:
        if fields is None:
            getters[label] = _at(label)
        elif label in fields.getters:
            getters[label] = fields.getters[label]
        else:
            raise bad_request(fields.refusal(label))

    def matches(obj: Obj) -> bool:
        return all((getters[label](obj) == value) == equal for label, equal, value in terms)

    return matches
