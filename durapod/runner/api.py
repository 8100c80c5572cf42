"""The runner's side of the API: stdlib ``http.client`` on one kept-alive connection.

No httpx here: importing it costs ~80 ms of every pod's start, and a lean client keeps
each call to one round trip.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"durapod API answered {status}: {detail}")
        self.status = status


class RunApi:
    """Calls on behalf of one run, authenticated by its per-run token."""

    def __init__(self, base_url: str, run_id: str, token: str) -> None:
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port
        self._tls = parts.scheme == "https"
        self._prefix = f"{parts.path.rstrip('/')}/internal/v1/runs/{run_id}"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._tls else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=30)
        return self._conn

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; transient failures (connection errors, 5xx) are retried with backoff."""
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for delay in (*RETRY_DELAYS, None):
            try:
                conn = self._connection()
                conn.request(method, self._prefix + path, payload, self._headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if delay is None:
                    raise
                time.sleep(delay)
                continue
            if response.status >= 500 and delay is not None:
                time.sleep(delay)
                continue
            if response.status >= 400:
                raise ApiError(response.status, data.decode(errors="replace"))
            return json.loads(data) if data else None
        raise AssertionError("unreachable")

    def context(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/context")
        return result

    def report(self, outcome: dict[str, Any]) -> None:
        self.call("POST", "/outcome", outcome)
