"""RFC 9457 problem+json errors, the one error shape of the API."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail

    def response(self) -> Response:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        return Response(orjson.dumps(body), self.status, media_type="application/problem+json")


_MEANINGS = {
    400: "The body is not JSON",
    401: "No valid bearer token, or a bad webhook signature",
    404: "No such task or run",
    413: "Payload too large",
    422: "Invalid request, name or payload",
}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes, each a problem+json body."""
    return {
        code: {"description": _MEANINGS[code], "content": {"application/problem+json": {}}}
        for code in codes
    }
