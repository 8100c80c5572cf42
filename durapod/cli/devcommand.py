"""``durapod dev``: start the local stack, optionally run the demo, serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from durapod.cli.tools import kubectl_path
from durapod.dev.apiserver.storage import Watcher
from durapod.dev.kubelet import NodeSettings
from durapod.dev.stack import Stack

console = Console(highlight=False)
HELLO_DIR = Path("examples/hello")
RESUME_DIR = Path("examples/resume")
DEMO_SECONDS = 120.0


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


async def _wait_for_run(stack: Stack, name: str, done: Callable[[dict[str, Any]], Any]) -> Any:
    """Wait (on the API server's own change feed) until ``done(status)`` is truthy."""
    taskruns = stack.cluster.registry.find("durapod.io", "v1", "taskruns")
    assert taskruns is not None
    watcher = Watcher(taskruns.key, "default", lambda obj: obj["metadata"]["name"] == name)
    stack.cluster.storage.watchers.add(watcher)
    try:
        async with asyncio.timeout(DEMO_SECONDS):
            while True:
                run = stack.cluster.storage.get(taskruns.key, "default", name)
                if run is not None and (result := done(run.get("status") or {})):
                    return result
                await watcher.queue.get()
    except TimeoutError as exc:
        raise RuntimeError(
            f"the demo run {name} did not finish; see `kubectl describe tr {name}`"
        ) from exc
    finally:
        stack.cluster.storage.watchers.discard(watcher)


def _finished(status: dict[str, Any]) -> str | None:
    phase = status.get("phase")
    return phase if phase in ("Succeeded", "Failed", "Cancelled", "TimedOut") else None


async def _show(stack: Stack, *args: str) -> str:
    console.print(f"[bold]demo:[/] kubectl {' '.join(args)}")
    out = await asyncio.to_thread(_kubectl, stack, *args)
    console.print(out)
    return out


async def _demo(stack: Stack) -> None:
    for directory in (HELLO_DIR, RESUME_DIR):
        if not directory.is_dir():
            raise RuntimeError(
                f"{directory}/ not found: run `durapod dev --demo` from the repository"
            )
    await _show(stack, "apply", "-f", f"{HELLO_DIR}/")
    phase = await _wait_for_run(stack, "hello-1", _finished)
    await _show(stack, "get", "tr")
    if phase != "Succeeded":
        raise RuntimeError(f"the demo run ended {phase}; see `kubectl describe tr hello-1`")
    output = await asyncio.to_thread(
        _kubectl, stack, "get", "tr", "hello-1", "-o", "jsonpath={.status.output}"
    )
    console.print(f"[bold green]demo run hello-1 Succeeded[/] with output {output}\n")

    console.print(
        "[bold]resume demo:[/] five steps of a second each; its pod is deleted "
        "once a step is checkpointed"
    )
    await _show(stack, "apply", "-f", f"{RESUME_DIR}/")
    pod = await _wait_for_run(
        stack,
        "resume-demo-1",
        lambda s: (s.get("lastCheckpoint") or {}).get("step") and s.get("podName"),
    )
    await _show(stack, "delete", "pod", pod)
    phase = await _wait_for_run(stack, "resume-demo-1", _finished)
    await _show(stack, "get", "tr", "resume-demo-1")
    run = stack.cluster.storage.get("durapod.io/taskruns", "default", "resume-demo-1") or {}
    status = run.get("status") or {}
    if phase != "Succeeded":
        raise RuntimeError(
            f"the resume demo ended {phase}; see `kubectl describe tr resume-demo-1`"
        )
    for step in status["output"]["steps"]:
        console.print(f"  step {step['step']} ran in pod {step['pod']}")
    console.print(
        f"[bold green]demo run resume-demo-1 Succeeded[/]: attempt "
        f"{status['attempt']}, resumed {status['resumes']} time(s) from its last "
        "checkpoint; no completed step ran twice\n"
    )


async def _serve(stack: Stack, demo: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if stack.install:
            console.print(f"installing helm/durapod with the values in {stack.values_file}...")
        await stack.start()
        console.print(
            f"[bold green]durapod dev is ready[/] (state in {stack.home})\n"
            f"  source {stack.home / 'env'}\n"
            f"  kubectl get taskruns        # the API server is {stack.kube_url}\n"
            f"  curl $DURAPOD_API_URL/healthz   # the durapod API is {stack.api_url}\n"
            f"  curl $DURAPOD_API_METRICS_URL   # Prometheus metrics: {stack.api_url}/metrics\n"
            f"  curl $DURAPOD_OPERATOR_METRICS_URL   # the operator's: "
            f"{stack.operator_metrics_url}\n"
            f"  {stack.api_url}/runs   # run pages in a browser; sign in with $DURAPOD_TOKEN\n"
            "  durapod runs logs NAME   # every attempt's pod log, in order"
        )
        if stack.install:
            console.print(
                "  helm list -n durapod-system      # the operator and the API are its pods\n"
                "  kubectl -n durapod-system logs deploy/durapod-operator  # their logs\n"
                "  kubectl -n durapod-system logs deploy/durapod-api\n"
                f"  helm upgrade durapod helm/durapod -n durapod-system -f {stack.values_file}"
                " --set ...   # try a value"
            )
        console.print("Press Ctrl-C to stop.")
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


def run(
    home: Path,
    demo: bool,
    operators: int = 1,
    apis: int = 1,
    capacity: dict[str, str] | None = None,
    tasks: tuple[Path, ...] = (),
    install: str = "",
) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    stack = Stack(
        home=home,
        workdir=Path.cwd(),
        operators=operators,
        apis=apis,
        node=NodeSettings(capacity=capacity or {}, python_path=tasks),
        install=install,
    )
    return asyncio.run(_serve(stack, demo))
