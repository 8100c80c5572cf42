"""Kubernetes ``Status`` error bodies, shaped as the real API server sends them."""

from __future__ import annotations

from typing import Any


class StatusError(Exception):
    """An API error answered with a ``kind: Status`` body and its HTTP code."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def _about(code: int, reason: str, message: str, plural: str, group: str, name: str) -> StatusError:
    return StatusError(code, reason, message, {"name": name, "group": group, "kind": plural})


def not_found(plural: str, group: str, name: str) -> StatusError:
    return _about(
        404, "NotFound", f'{qualified(plural, group)} "{name}" not found', plural, group, name
    )


def already_exists(plural: str, group: str, name: str) -> StatusError:
    return _about(
        409,
        "AlreadyExists",
        f'{qualified(plural, group)} "{name}" already exists',
        plural,
        group,
        name,
    )


def conflict(plural: str, group: str, name: str) -> StatusError:
    message = (
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": the '
        "object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return _about(409, "Conflict", message, plural, group, name)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> StatusError:
    """A 422 naming every offending field, as schema validation reports it."""
    texts = [f"{c['field']}: {c['message']}" for c in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return StatusError(
        422,
        "Invalid",
        f'{kind}.{group} "{name}" is invalid: {joined}'
        if group
        else f'{kind} "{name}" is invalid: {joined}',
        {"name": name, "group": group, "kind": kind, "causes": causes},
    )
