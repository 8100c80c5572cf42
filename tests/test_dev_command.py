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


def _home(tmp_path: Path) -> Path:
    for path in (tmp_path, *tmp_path.parents):
        if str(path).startswith("/tmp/"):
            path.chmod(0o755)  # the postgres user must reach its data directory
    return tmp_path / "home"


def test_demo_succeeds_then_sigint_leaves_no_process(tmp_path: Path) -> None:
    dev = DevProcess(_home(tmp_path), "--demo")
    dev.wait_for_output("demo run hello-1 Succeeded")
    assert "durapod dev is ready" in dev.output
    assert '"greeting":"Hello, world!"' in dev.output
    env = dev.env()
    assert set(env) == {"KUBECONFIG", "DURAPOD_API_URL", "DURAPOD_TOKEN", "DATABASE_URL"}
    assert dev.process.poll() is None  # still serving
    postmaster = int((dev.home / "postgres" / "postmaster.pid").read_text().split()[0])
    started = _descendants(dev.process.pid) | {postmaster}
    assert len(started) >= 3  # at least the operator, the API and PostgreSQL
    assert dev.stop() == 0
    assert [pid for pid in started if _alive(pid)] == []


def test_sigterm_stops_it_too(tmp_path: Path) -> None:
    dev = DevProcess(_home(tmp_path))
    dev.wait_for_output("durapod dev is ready")
    children = _descendants(dev.process.pid)
    dev.process.send_signal(signal.SIGTERM)
    assert dev.process.wait(60) == 0
    dev.stop()
    assert [pid for pid in children if _alive(pid)] == []
