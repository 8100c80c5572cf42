"""`durapod dev --demo`, the README's first command: it shows the demo run succeed, keeps
serving, and a signal stops everything it started."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.helpers import DevProcess


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            found |= {int(child)} | _descendants(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def _postmaster(database_url: str) -> int:
    """The PostgreSQL server listening on the URL's port (pg_ctl daemonises it)."""
    port = database_url.rsplit(":", 1)[1].split("/")[0]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"/postgres") and b"-p" in args and port.encode() in args:
            return int(cmdline.parent.name)
    raise AssertionError(f"no PostgreSQL server on port {port}")


def test_demo_succeeds_then_sigint_leaves_no_process(open_tmp: Path) -> None:
    dev = DevProcess(open_tmp / "home", "--demo")
    dev.wait_for_output("demo run resume-demo-1 Succeeded")
    assert "durapod dev is ready" in dev.output
    assert "demo run hello-1 Succeeded" in dev.output
    assert '"greeting":"Hello, world!"' in dev.output
    assert "kubectl delete pod resume-demo-1-1" in dev.output
    assert "step 5 ran in pod resume-demo-1-2" in dev.output
    assert "attempt 1, resumed 1 time(s)" in dev.output
    env = dev.env()
    assert set(env) == {
        "KUBECONFIG",
        "DURAPOD_API_URL",
        "DURAPOD_API_URLS",
        "DURAPOD_TOKEN",
        "DATABASE_URL",
        "DURAPOD_API_METRICS_URL",
        "DURAPOD_OPERATOR_METRICS_URL",
    }
    assert dev.process.poll() is None  # still serving
    postmaster = _postmaster(env["DATABASE_URL"])
    started = _descendants(dev.process.pid) | {postmaster}
    assert len(started) >= 3  # at least the operator, the API and PostgreSQL
    assert dev.stop() == 0
    assert [pid for pid in started if _alive(pid)] == []


def test_sigterm_stops_it_too(open_tmp: Path) -> None:
    dev = DevProcess(open_tmp / "home")
    dev.wait_for_output("durapod dev is ready")
    children = _descendants(dev.process.pid)
    dev.process.send_signal(signal.SIGTERM)
    assert dev.process.wait(60) == 0
    dev.stop()
    assert [pid for pid in children if _alive(pid)] == []
