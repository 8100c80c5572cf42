"""The runner's side of the API: stdlib ``http.client`` on one kept-alive connection.

No httpx here: importing it costs ~80 ms of every pod's start, and a lean client keeps
each checkpoint to one round trip.

Transient failures (connection errors, 5xx) are retried for long enough to ride out a
PostgreSQL restart or an API rollout: backoff from 50 ms to at most ``MAX_DELAY``, or the
server's ``Retry-After`` on a 503, until ``RETRY_BUDGET`` seconds have passed since the
first failure. Every call is idempotent on the server, so a retry never writes twice.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from durapod.runner import tracing
from durapod.runner.errors import ApiError

FIRST_DELAY = 0.05
MAX_DELAY = 4.0
#: Seconds from a call's first failure after which it gives up and raises.
RETRY_BUDGET = 120.0
#: The longest ``Retry-After`` honoured (a longer one is capped, not obeyed).
MAX_RETRY_AFTER = 30.0


class RunApi:
    """Calls on behalf of one run (a Journal), authenticated by the pod's token: a file the
    kubelet renews (read again for every call), or a fixed string."""

    def __init__(self, base_url: str, run_id: str, token: str | Path, pod: int) -> None:
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port
        self._tls = parts.scheme == "https"
        self._prefix = f"{parts.path.rstrip('/')}/internal/v1/runs/{run_id}"
        self._token = token
        self._pod = pod
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._tls else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=30)
        return self._conn

    def _headers(self) -> dict[str, str]:
        token = self._token
        if isinstance(token, Path):
            token = token.read_text().strip()
        # With tracing on, the current span: a child run this call starts joins the trace.
        base = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return {**base, **tracing.headers()}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        """One request; transient failures (connection errors, 5xx) are retried with backoff.

        Every write is idempotent on the server, so a retried call cannot write twice.
        """
        delay, deadline = FIRST_DELAY, 0.0
        while True:
            try:
                conn = self._connection()
                conn.request(method, self._prefix + path, body, self._headers())
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                failure: Exception = exc
                wait = delay
            else:
                if response.status < 400:
                    return json.loads(data) if data else None
                failure = ApiError(response.status, data.decode(errors="replace"))
                if response.status < 500:
                    raise failure
                wait = _retry_after(response.getheader("Retry-After"), delay)
            now = time.monotonic()
            deadline = deadline or now + RETRY_BUDGET
            if now + wait > deadline:
                raise failure
            time.sleep(wait * random.uniform(1.0, 1.2))  # jittered: pods do not retry in step
            delay = min(delay * 2, MAX_DELAY)

    def context(self) -> dict[str, Any]:
        """The run's payload, attempt, checkpoint limit and every checkpoint so far."""
        result: dict[str, Any] = self.call("GET", f"/context?pod={self._pod}")
        return result

    def record(self, step: str, seq: int, output: bytes, duration: float | None = None) -> None:
        fields: dict[str, Any] = {"step": step, "seq": seq}
        if duration is not None:
            fields["duration"] = round(duration, 6)  # the step's, for the API's metrics
        head = json.dumps(fields, separators=(",", ":")).encode()
        self.call("POST", "/checkpoints", head[:-1] + b',"output":' + output + b"}")

    def save_state(self, seq: int, state: bytes) -> None:
        self.call("PUT", "/state", b'{"seq":%d,"state":' % seq + state + b"}")

    def trigger(self, task: str, payload: Any, name: str) -> dict[str, Any]:
        body = {"task": task, "payload": payload, "name": name}
        result: dict[str, Any] = self.call("POST", "/children", json.dumps(body).encode())
        return result

    def report(self, outcome: dict[str, Any]) -> None:
        """The pod's outcome: ``output``, ``error`` or ``suspend``."""
        body = json.dumps({"pod": self._pod, **outcome}, separators=(",", ":")).encode()
        self.call("POST", "/outcome", body)


def _retry_after(header: str | None, default: float) -> float:
    """The seconds a ``Retry-After`` header asks for (a number; a date is ignored)."""
    if header:
        try:
            return min(max(float(header), 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    return default
