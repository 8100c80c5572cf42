"""The runner's API client retries transient failures (connection drops, 5xx) over real
HTTP, and never retries a 4xx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from durapod.runner.api import ApiError, RunApi


class Flaky(BaseHTTPRequestHandler):
    """Drops the connection, then answers 503, then 204; counts every request."""

    script: ClassVar[list[str]] = []
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(self.path)
        action = self.script.pop(0) if self.script else "204"
        if action == "drop":
            self.connection.close()
            return
        self.send_response(int(action))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_transient_failures_are_retried_until_the_write_lands(server: str) -> None:
    Flaky.script, Flaky.seen = ["drop", "503", "204"], []
    RunApi(server, "run-1", "token", 1).record("step", 0, b'{"a":1}')
    assert Flaky.seen == ["/internal/v1/runs/run-1/checkpoints"] * 3


def test_client_errors_are_not_retried(server: str) -> None:
    Flaky.script, Flaky.seen = ["403"], []
    with pytest.raises(ApiError) as raised:
        RunApi(server, "run-1", "token", 1).record("step", 0, b"1")
    assert raised.value.status == 403 and len(Flaky.seen) == 1
