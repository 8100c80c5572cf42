"""The runner's API client retries transient failures (connection drops, 5xx) over real
HTTP and never a 4xx; it rides out an outage (a PostgreSQL restart, an API rollout):
it honours Retry-After on a 503, keeps retrying for minutes rather than seconds, and gives
up once its budget is spent. A scripted server, over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from durapod.runner import api as client
from durapod.runner.api import RunApi
from durapod.runner.errors import ApiError


class Scripted(BaseHTTPRequestHandler):
    """Answers each request as the script says (``drop``, ``204``, ``503``, ``503:<retry
    after>``), then 204; notes when each request came."""

    script: ClassVar[list[str]] = []
    seen: ClassVar[list[float]] = []

    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(time.monotonic())
        self.paths.append(self.path)
        action = self.script.pop(0) if self.script else "204"
        if action == "drop":
            self.close_connection = True
            self.connection.close()
            return
        status, _, retry_after = action.partition(":")
        self.send_response(int(status))
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Scripted.script, Scripted.seen, Scripted.paths = [], [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _write(server: str) -> None:
    RunApi(server, "run-1", "token", 1).record("step", 0, b'{"a":1}')


def test_transient_failures_are_retried_until_the_write_lands(server: str) -> None:
    Scripted.script = ["drop", "503", "204"]
    _write(server)
    assert Scripted.paths == ["/internal/v1/runs/run-1/checkpoints"] * 3


def test_client_errors_are_not_retried(server: str) -> None:
    Scripted.script = ["403"]
    with pytest.raises(ApiError) as raised:
        _write(server)
    assert raised.value.status == 403 and len(Scripted.seen) == 1


def test_a_503_is_retried_after_its_retry_after(server: str) -> None:
    Scripted.script = ["503:1", "204"]
    _write(server)
    assert len(Scripted.seen) == 2
    assert Scripted.seen[1] - Scripted.seen[0] >= 1.0


def test_an_outage_longer_than_a_few_retries_is_ridden_out(server: str) -> None:
    Scripted.script = ["503:0"] * 20 + ["204"]
    _write(server)
    assert len(Scripted.seen) == 21


def test_dropped_connections_are_retried_with_capped_backoff(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "MAX_DELAY", 0.05)
    Scripted.script = ["drop"] * 12 + ["204"]
    _write(server)
    assert len(Scripted.seen) == 13


def test_the_client_gives_up_once_its_budget_is_spent(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "RETRY_BUDGET", 0.5)
    Scripted.script = ["503"] * 1000  # no Retry-After: the client's own backoff
    with pytest.raises(ApiError) as raised:
        _write(server)
    assert raised.value.status == 503
    # Retried with backoff (50, 100, 200 ms ...), and not past the budget (a count, not a
    # clock: a busy machine can only make fewer tries).
    assert 2 <= len(Scripted.seen) <= 6


def test_the_budget_is_long_enough_for_a_postgres_restart() -> None:
    assert client.RETRY_BUDGET >= 60 and client.MAX_DELAY <= 5
