"""Admission of a write to a built-in kind, in kube-apiserver's order: decode against the
upstream schema (400 for a wrong type; unknown fields dropped, warned about or refused as
``fieldValidation`` asks), default, allocate (Service IPs and node ports), validate (422
naming each field). Custom resources take the CRD path (``schema``) instead."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from durapod.dev.apiserver import decoding, defaults, errors, fielderrors, validation
from durapod.dev.apiserver.registry import ResourceType

Obj = dict[str, Any]


def admit(
    rt: ResourceType,
    body: Obj,
    old: Obj | None,
    subresource: str | None,
    field_validation: str,
    services: Callable[[], list[Obj]],
) -> tuple[Obj, list[str]]:
    """The object to store and the warnings to send, or a StatusError.

    ``old`` is the stored object on an update (None on create); ``services`` lists the
    stored Services, whose cluster IPs and node ports are taken.
    """
    obj, unknown = decoding.decode(rt, body)
    warnings: list[str] = []
    if unknown and field_validation == "Strict":
        raise decoding.strict_error(rt, unknown)
    if field_validation == "Warn":
        warnings = [f'unknown field "{path}"' for path in unknown]
    key = (rt.group, rt.kind)
    if key in defaults.BY_KIND:
        defaults.BY_KIND[key](obj)
    found: list[fielderrors.FieldError] = []
    if key == ("", "Pod") and subresource is None:
        defaults.pod_admission(obj, old)
    if key == ("", "Service"):
        found += _allocate(obj, old, services())
    found += validation.problems(rt.group, rt.kind, obj, old, subresource)
    if found:
        name = (obj.get("metadata") or {}).get("name", "")
        raise errors.invalid(rt.kind, rt.group, name, fielderrors.causes(found))
    return obj, warnings


def _allocate(obj: Obj, old: Obj | None, stored: list[Obj]) -> list[fielderrors.FieldError]:
    """The Service registry's allocations; a requested cluster IP must be free and in range."""
    uid = (obj.get("metadata") or {}).get("uid")
    others = [s for s in stored if (s.get("metadata") or {}).get("uid") != uid]
    used_ips = {ip for s in others for ip in (s.get("spec") or {}).get("clusterIPs") or []}
    used_ports = {
        p.get("nodePort")
        for s in others
        for p in (s.get("spec") or {}).get("ports") or []
        if p.get("nodePort")
    }
    if old is not None:
        defaults.keep_allocations(obj, old)
    spec = obj.get("spec") or {}
    requested = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
    unchanged = old is not None and requested in ((old.get("spec") or {}).get("clusterIPs") or [])
    if requested and requested != "None" and not unchanged:
        problem = _ip_problem(requested, used_ips)
        if problem:
            shown = spec.get("clusterIPs") or [requested]
            return [
                fielderrors.invalid(
                    "spec.clusterIPs", shown, f"failed to allocate IP {requested}: {problem}"
                )
            ]
    defaults.service(obj, used_ips, used_ports)
    return []


def _ip_problem(requested: str, used: set[str]) -> str | None:
    try:
        address = ipaddress.ip_address(requested)
    except ValueError:
        return None  # validation names the malformed address
    if address not in defaults.SERVICE_CIDR:
        return (
            f"the provided IP ({requested}) is not in the valid range. "
            f"The range of valid IPs is {defaults.SERVICE_CIDR}"
        )
    if requested in used:
        return "provided IP is already allocated"
    return None
