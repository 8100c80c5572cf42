"""``durapod dev``: start the local stack, optionally run the demo, serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from durapod.dev.stack import Stack

console = Console(highlight=False)
DEMO_DIR = Path("examples/hello")
DEMO_RUN = "hello-1"
DEMO_SECONDS = 120.0


def kubectl_path() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run `make setup`, which installs the pinned one")
    return found


def _kubectl(stack: Stack, *args: str) -> str:
    result = subprocess.run(
        [kubectl_path(), "--cache-dir", str(stack.home / "kube-cache"), *args],
        env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


async def _demo(stack: Stack) -> None:
    if not DEMO_DIR.is_dir():
        raise RuntimeError(f"{DEMO_DIR}/ not found: run `durapod dev --demo` from the repository")
    console.print(f"\n[bold]demo:[/] kubectl apply -f {DEMO_DIR}/")
    console.print(await asyncio.to_thread(_kubectl, stack, "apply", "-f", f"{DEMO_DIR}/"))
    taskruns = stack.cluster.registry.find("durapod.io", "v1", "taskruns")
    assert taskruns is not None
    deadline = time.monotonic() + DEMO_SECONDS
    phase = None
    while time.monotonic() < deadline:
        run = stack.cluster.storage.get(taskruns.key, "default", DEMO_RUN)
        phase = ((run or {}).get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed", "Cancelled", "TimedOut"):
            break
        await asyncio.sleep(0.1)
    console.print("[bold]demo:[/] kubectl get tr")
    console.print(await asyncio.to_thread(_kubectl, stack, "get", "tr"))
    output = await asyncio.to_thread(
        _kubectl, stack, "get", "tr", DEMO_RUN, "-o", "jsonpath={.status.output}"
    )
    if phase != "Succeeded":
        raise RuntimeError(
            f"the demo run ended {phase or 'unfinished'}; see `kubectl describe tr {DEMO_RUN}`"
        )
    console.print(f"[bold green]demo run {DEMO_RUN} Succeeded[/] with output {output}\n")


async def _serve(stack: Stack, demo: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
        console.print(
            f"[bold green]durapod dev is ready[/] (state in {stack.home})\n"
            f"  source {stack.home / 'env'}\n"
            f"  kubectl get taskruns        # the API server is {stack.kube_url}\n"
            f"  curl $DURAPOD_API_URL/healthz   # the durapod API is {stack.api_url}\n"
            "Press Ctrl-C to stop."
        )
        if demo:
            await _demo(stack)
        await stop.wait()
        return 0
    except RuntimeError as exc:
        console.print(f"[bold red]durapod dev: {exc}[/]")
        return 1
    finally:
        console.print("stopping...")
        await stack.stop()


def run(home: Path, demo: bool) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(_serve(Stack(home=home, workdir=Path.cwd()), demo))
