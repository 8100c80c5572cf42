"""Query parameters and DeleteOptions, decoded and checked as kube-apiserver's parameter
codec and meta/v1 validation check them: a malformed number is a 400 with Go's
``strconv`` wording, an unsupported option value is the 422 the real server gives
(``CreateOptions.meta.k8s.io "" is invalid: dryRun: ...``), never a 500."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from durapod.dev.apiserver import errors

_INT = re.compile(r"^[+-]?[0-9]+$")
_UINT = re.compile(r"^[0-9]+$")
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
#: Which options object a verb's query parameters decode into.
OPTIONS_KIND = {
    "POST": "CreateOptions",
    "PUT": "UpdateOptions",
    "PATCH": "PatchOptions",
    "DELETE": "DeleteOptions",
}
PROPAGATION = ("Foreground", "Background", "Orphan")


#: A request's query parameters (aiohttp's ``request.query``).
Query = MultiMapping[str]


def _go_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _cause(reason: str, field: str, message: str) -> dict[str, str]:
    return {"reason": reason, "field": field, "message": message}


def invalid_options(kind: str, causes: list[dict[str, str]]) -> errors.StatusError:
    """The 422 of a rejected options object (``NewInvalid`` of ``<kind>.meta.k8s.io``)."""
    return errors.invalid(kind, "meta.k8s.io", "", causes)


def int64(name: str, raw: str) -> int:
    """strconv.ParseInt, as the parameter codec applies it to ``limit`` and the like."""
    if not _INT.match(raw):
        raise errors.bad_request(f'strconv.ParseInt: parsing "{raw}": invalid syntax')
    value = int(raw)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{raw}": value out of range')
    return value


def optional_int(query: Query, name: str) -> int | None:
    raw = query.get(name)
    return None if raw is None else int64(name, raw)


def flag(query: Query, name: str) -> bool:
    """A boolean parameter: present and not ``0``/``false`` means true (as Go's codec)."""
    raw = query.get(name)
    return raw is not None and raw != "0" and raw.lower() != "false"


def resource_version(raw: str | None) -> int:
    """APIObjectVersioner.ParseResourceVersion: "" and "0" mean any; else a uint64.

    The etcd-backed store answers a malformed value with this 400 (the watch cache, in
    front of it, answers 500, a known upstream bug: kubernetes/kubernetes#139485).
    """
    if raw in (None, "", "0"):
        return 0
    assert raw is not None
    problem = "" if _UINT.match(raw) else "invalid syntax"
    if not problem and int(raw) > _UINT64_MAX:
        problem = "value out of range"
    if problem:
        shown = _go_json(raw)
        raise errors.bad_request(
            f"invalid resource version: resourceVersion: Invalid value: {shown}: "
            f"strconv.ParseUint: parsing {shown}: {problem}"
        )
    return int(raw)


def dry_run(query: Query, method: str) -> bool:
    """The ``dryRun`` parameter of a write: only ``All`` is supported (ValidateDryRun)."""
    kind = OPTIONS_KIND.get(method)
    values = list(query.getall("dryRun", []))
    if kind is None or not values:
        return False
    return dry_run_values(values, kind)


def dry_run_values(values: list[Any], kind: str) -> bool:
    if any(v != "All" for v in values):
        message = f'Unsupported value: {_go_json(values)}: supported values: "All"'
        raise invalid_options(kind, [_cause("FieldValueNotSupported", "dryRun", message)])
    return bool(values)


@dataclass(frozen=True)
class ListOptions:
    """A list or watch request's options, checked."""

    resource_version: int
    resource_version_text: str
    limit: int
    continue_token: str
    timeout_seconds: int | None
    send_initial_events: bool
    bookmarks: bool
    include_object: str | None


def list_options(query: Query, watch: bool) -> ListOptions:
    """Decode and validate (metainternalversion's ValidateListOptions) a list/watch query."""
    rv_text = query.get("resourceVersion") or ""
    rv = resource_version(rv_text)
    limit = optional_int(query, "limit") or 0
    timeout = optional_int(query, "timeoutSeconds")
    token = query.get("continue") or ""
    match = query.get("resourceVersionMatch") or ""
    initial = "sendInitialEvents" in query
    causes: list[dict[str, str]] = []

    def forbidden(message: str) -> None:
        causes.append(
            _cause("FieldValueForbidden", "resourceVersionMatch", f"Forbidden: {message}")
        )

    if watch:
        if initial and match != "NotOlderThan":
            forbidden("sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")
        if match:
            if not initial:
                forbidden(
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents "
                    "is provided"
                )
            if match != "NotOlderThan":
                causes.append(
                    _cause(
                        "FieldValueNotSupported",
                        "resourceVersionMatch",
                        f'Unsupported value: "{match}": supported values: "NotOlderThan"',
                    )
                )
    else:
        if match:
            if not rv_text:
                forbidden("resourceVersionMatch is forbidden unless resourceVersion is provided")
            if token:
                forbidden("resourceVersionMatch is forbidden when continue is provided")
            if match not in ("Exact", "NotOlderThan"):
                causes.append(
                    _cause(
                        "FieldValueNotSupported",
                        "resourceVersionMatch",
                        f'Unsupported value: "{match}": supported values: "Exact", '
                        '"NotOlderThan", ""',
                    )
                )
            if match == "Exact" and rv_text == "0":
                forbidden('resourceVersionMatch "exact" is forbidden for resourceVersion "0"')
        if initial:
            causes.append(
                _cause(
                    "FieldValueForbidden",
                    "sendInitialEvents",
                    "Forbidden: sendInitialEvents is forbidden for list",
                )
            )
    if causes:
        raise invalid_options("ListOptions", causes)
    if token and rv_text not in ("", "0"):
        raise errors.bad_request("specifying resource version is not allowed when using continue")
    return ListOptions(
        resource_version=rv,
        resource_version_text=rv_text,
        limit=limit,
        continue_token=token,
        timeout_seconds=timeout,
        send_initial_events=flag(query, "sendInitialEvents"),
        bookmarks=flag(query, "allowWatchBookmarks"),
        include_object=query.get("includeObject"),
    )


def delete_options(decoded: Mapping[str, Any]) -> dict[str, Any]:
    """DeleteOptions (decoded from the body, or from the query when there is no body),
    validated as ValidateDeleteOptions does. The result keeps the DeleteOptions field
    names, with ``propagationPolicy`` settled (the legacy ``orphanDependents`` folded in)."""
    options = dict(decoded)
    grace = options.get("gracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
        raise errors.bad_request(
            f"json: cannot unmarshal {type(grace).__name__} into Go struct field "
            "DeleteOptions.gracePeriodSeconds of type int64"
        )
    causes: list[dict[str, str]] = []
    policy = options.get("propagationPolicy")
    orphan = options.get("orphanDependents")
    if orphan is not None and policy is not None:
        causes.append(
            _cause(
                "FieldValueInvalid",
                "propagationPolicy",
                f"Invalid value: {_go_json(policy)}: orphanDependents and deletionPropagation "
                "cannot be both set",
            )
        )
    if policy is not None and policy not in PROPAGATION:
        causes.append(
            _cause(
                "FieldValueNotSupported",
                "propagationPolicy",
                f"Unsupported value: {_go_json(policy)}: supported values: "
                '"Foreground", "Background", "Orphan", "nil"',
            )
        )
    dry = options.get("dryRun") or []
    if not isinstance(dry, list):
        raise errors.bad_request(
            "json: cannot unmarshal string into Go struct field DeleteOptions.dryRun of type "
            "[]string"
        )
    if any(v != "All" for v in dry):
        causes.append(
            _cause(
                "FieldValueNotSupported",
                "dryRun",
                f'Unsupported value: {_go_json(dry)}: supported values: "All"',
            )
        )
    if causes:
        raise invalid_options("DeleteOptions", causes)
    if policy is None:
        # The legacy orphanDependents flag, when it is the one given.
        options["propagationPolicy"] = "Orphan" if orphan else "Background"
    return options
