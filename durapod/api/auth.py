"""Bearer tokens: static tokens from a Secret, or Kubernetes ServiceAccount tokens
checked with a TokenReview against the API server (answers cached for a minute)."""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from durapod.api.kube import Kube
from durapod.api.problems import Problem, unavailable

CACHE_SECONDS = 60.0
_bearer = HTTPBearer(
    auto_error=False, description="A static API token or a Kubernetes ServiceAccount token"
)


class Authenticator:
    def __init__(self, static_tokens: list[str], kube: Kube) -> None:
        self._static = [t for t in static_tokens if t]
        self._kube = kube
        self._reviewed: dict[str, tuple[float, str]] = {}

    async def principal(self, token: str) -> str:
        if any(hmac.compare_digest(token, known) for known in self._static):
            return "static-token"
        cached = self._reviewed.get(token)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            user = await self._kube.review_token(token)
        except Exception as exc:  # no API server to ask: the token cannot be checked
            raise unavailable(f"cannot review the bearer token: {exc}") from exc
        if user is None:
            raise Problem(401, "Unauthorized", "the bearer token is not valid")
        self._reviewed[token] = (time.monotonic() + CACHE_SECONDS, user)
        return user


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's identity; 401 without a valid bearer token."""
    if credentials is None:
        raise Problem(401, "Unauthorized", "a bearer token is required")
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.principal(credentials.credentials)


Principal = Annotated[str, Depends(authenticated)]
