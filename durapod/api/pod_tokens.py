"""Which run a pod's bearer token speaks for.

The token is the pod's projected ServiceAccount token (audience ``durapod``): a
TokenReview says whether it is valid and which pod it is bound to (a deleted pod's token
is not), and the pod's record says which run and attempt it is. Answers are kept for a
few seconds: a checkpoint should not cost a TokenReview, and a deleted pod's token stops
working within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from uuid import UUID

from durapod.api.database import Database
from durapod.api.kube import Kube
from durapod.api.problems import unavailable
from durapod.store import pods

CACHE_SECONDS = 10.0
#: Answers kept at most: one per live pod is plenty.
CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Caller:
    """The pod behind a token: its run's id, namespace and task, and its index in the run."""

    run_id: UUID
    namespace: str
    pod: int
    task: str


class PodTokens:
    def __init__(self, kube: Kube, db: Database) -> None:
        self._kube = kube
        self._db = db
        self._known: dict[bytes, tuple[float, Caller | None]] = {}

    async def caller(self, token: str) -> Caller | None:
        """The pod the token is bound to, or None when it is no valid pod token."""
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        cached = self._known.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            bound = await self._kube.review_pod_token(token)
        except Exception as exc:  # no API server to ask: the token cannot be checked
            raise unavailable(f"cannot review the pod's token: {exc}") from exc
        found = None
        if bound is not None:
            namespace, pod_name = bound
            owner = await pods.owner(await self._db.pool(), namespace, pod_name)
            if owner is not None:
                found = Caller(owner[0], namespace, owner[1], owner[2])
        if len(self._known) >= CACHE_SIZE:
            self._known = {k: v for k, v in self._known.items() if v[0] > now}
            if len(self._known) >= CACHE_SIZE:
                self._known.clear()
        self._known[key] = (now + CACHE_SECONDS, found)
        return found
