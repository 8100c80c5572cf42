"""RFC 9457 problem+json errors, the one error shape of the API."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

#: Seconds a client should wait before retrying a 503 (the database or cluster is away).
RETRY_AFTER_SECONDS = 2


class Problem(Exception):
    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers

    def response(self) -> Response:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        return Response(
            orjson.dumps(body),
            self.status,
            headers=self.headers,
            media_type="application/problem+json",
        )


def unavailable(detail: str) -> Problem:
    """A 503 the client should retry after ``Retry-After`` seconds."""
    return Problem(
        503,
        "Service Unavailable",
        f"{detail}; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


_MEANINGS = {
    400: "The body is not JSON",
    401: "No valid bearer token, or a bad webhook signature",
    404: "No such task or run",
    413: "Payload too large",
    422: "Invalid request, name or payload",
    503: "The database (or the cluster) is unavailable for now: retry after Retry-After seconds",
}
_HEADERS = {
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer"},
        }
    }
}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes, each a problem+json body."""
    return {
        code: {
            "description": _MEANINGS[code],
            "content": {"application/problem+json": {}},
            **({"headers": _HEADERS[code]} if code in _HEADERS else {}),
        }
        for code in codes
    }
