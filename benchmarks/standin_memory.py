"""How much memory ``durapod dev`` holds after many changes: the stand-in's bound.

Starts ``durapod dev`` (PostgreSQL, the stand-in API server and kubelet in the dev
process, the operator and the API beside it), makes 100 TaskRuns, waits for the operator
to finish them, then writes ``--changes`` TaskRun-sized status changes (a checkpoint mark
and a 1 KiB output, like a run's progress) through the API server with the real watch
of the operator attached. Prints the dev process's resident memory before and after, the
peak, and the ratio after/before (the floor is the same process before the changes);
exits non-zero when the peak passes ``--limit-mib``.

    .venv/bin/python benchmarks/standin_memory.py [--changes 100000] [--limit-mib 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
RUNS = 100
WORKERS = 16
OUTPUT = {"blob": "x" * 1000}


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


async def change_all(url: str, token: str, changes: int) -> float:
    """``changes`` status merge patches over the runs, from WORKERS connections."""
    counter = iter(range(changes))
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/merge-patch+json",
    }

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            for i in counter:
                name = f"mem-{i % RUNS}"
                status = {"lastCheckpoint": {"step": f"step-{i}", "at": "2026-01-01T00:00:00Z"}}
                response = await client.patch(
                    f"/apis/durapod.io/v1/namespaces/default/taskruns/{name}/status",
                    json={"status": {**status, "output": {**OUTPUT, "i": i}}},
                )
                response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--limit-mib", type=float, default=300.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="durapod-bench-mem-"))
    home.chmod(0o755)
    console = home / "console.log"
    with console.open("w") as out:
        dev = subprocess.Popen(
            [str(BIN / "durapod"), "dev", "--home", str(home / "dev")],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    home = home / "dev"
    try:

        def ready() -> bool:
            if dev.poll() is not None:
                raise RuntimeError(f"durapod dev exited:\n{console.read_text()}")
            return "durapod dev is ready" in console.read_text()

        wait_for(ready, 120, "durapod dev to be ready")
        config = yaml.safe_load((home / "kubeconfig").read_text())
        url = config["clusters"][0]["cluster"]["server"]
        token = config["users"][0]["user"]["token"]
        kubectl = [str(BIN / "kubectl"), "--kubeconfig", str(home / "kubeconfig")]
        manifests = "".join(
            f"---\napiVersion: durapod.io/v1\nkind: TaskRun\nmetadata: {{name: mem-{i}}}\n"
            "spec: {task: not-defined}\n"
            for i in range(RUNS)
        )
        subprocess.run([*kubectl, "create", "-f", "-"], input=manifests, text=True, check=True)

        def all_failed() -> bool:
            out = subprocess.run(
                [*kubectl, "get", "tr", "-o", "jsonpath={.items[*].status.phase}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            return len(out) == RUNS and set(out) == {"Failed"}

        wait_for(all_failed, 300, "the operator to finish the runs (unknown task)")
        before = rss_mib(dev.pid)
        seconds = asyncio.run(change_all(url, token, args.changes))
        after, peak = rss_mib(dev.pid), rss_mib(dev.pid, "VmHWM")
    finally:
        dev.send_signal(2)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            dev.kill()
        shutil.rmtree(console.parent, ignore_errors=True)
    print(f"durapod dev after {args.changes:,} TaskRun status changes ({WORKERS} clients):")
    print(f"  resident before   {before:8.1f} MiB   (the floor: same process, before)")
    print(f"  resident after    {after:8.1f} MiB   ratio {after / before:.2f}x the floor")
    print(f"  peak              {peak:8.1f} MiB   limit {args.limit_mib:.0f} MiB")
    print(f"  changes/second    {args.changes / seconds:8.0f}")
    if peak > args.limit_mib:
        print(f"FAIL: peak {peak:.1f} MiB over {args.limit_mib:.0f} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
