"""What tracing costs per durable step, off and on.

1. The runner alone: ``await ctx.step(...)`` with a journal that stores nothing, so only
   durapod's own work and (on) the step and checkpoint-write spans are timed.
2. The checkpoint path as ``benchmarks/checkpoint_path.py`` measures it (runner → API
   → PostgreSQL, a 1 KiB output, fsync on), with tracing off, then on: the runner's
   spans, its ``traceparent`` on each call, and the API's spans of each request, all
   exported over OTLP/HTTP to a loopback receiver by the SDK's batch processor.

Rounds alternate off and on (this machine is shared: both see the same load).

    .venv/bin/python benchmarks/tracing_cost.py [--steps 2000] [--rounds 10]

Measured here (2 cores, load 4-5 from other work, so the path's numbers are rough): the
runner alone +40 µs per step on (11 → 51 µs: two spans; +16 µs when the run is not
sampled, ``traceparent`` flags 00); the checkpoint path p50 842 → 1113 µs, about half of
it the runner's spans and their export thread, half the API's request spans. Off, the
runner never imports OpenTelemetry and a step costs what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from checkpoint_path import percentiles, seed, serve_api, steps, timed_steps  # noqa: E402

from durapod import store  # noqa: E402
from durapod.dev.postgres import PostgresServer  # noqa: E402
from durapod.runner import tracing  # noqa: E402
from durapod.runner.context import Context  # noqa: E402
from tests.helpers import LocalCluster  # noqa: E402

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#: The loopback receiver, in a process of its own (decoding spans takes CPU and the GIL):
#: prints its URL, serves until its stdin closes, then prints how many spans it got.
RECEIVER = (
    "import sys; from tests.otlp import Receiver; r = Receiver(); print(r.url, flush=True); "
    "sys.stdin.read(); print(len(r.spans()), flush=True); r.close()"
)


class Nowhere:
    """A journal that keeps nothing: the step's own cost, without I/O."""

    def record(self, step: str, seq: int, output: bytes, duration: float | None = None) -> None:
        pass

    def save_state(self, seq: int, state: bytes) -> None:
        pass

    def trigger(self, task: str, payload: object, name: str) -> dict[str, str]:
        return {"name": name}


async def bare_steps(n: int) -> list[float]:
    ctx = Context(run_id="r", name="r", namespace="bench", attempt=1, journal=Nowhere())
    return await timed_steps(ctx, n)


class Runner:
    """This process as a pod's runner: tracing set up once, and switched off for the off
    rounds by unsetting its tracer (the state of a pod without ``OTEL_*``)."""

    def __init__(self) -> None:
        assert tracing.setup(dict(os.environ))
        self._tracer = tracing._tracer

    def traced(self, on: bool) -> None:
        tracing._tracer = self._tracer if on else None


def path_steps(dsn: str, cluster: LocalCluster, url: str, n: int) -> list[float]:
    run_id, pod = asyncio.run(seed(dsn))
    return asyncio.run(steps(url, run_id, cluster.pod_token("bench", pod), n))


def show(what: str, off: list[float], on: list[float]) -> None:
    (off50, off90), (on50, on90) = percentiles(off), percentiles(on)
    print(
        f"{what:<28} off p50 {off50 * 1e6:7.1f} µs p90 {off90 * 1e6:7.1f} µs | "
        f"on p50 {on50 * 1e6:7.1f} µs p90 {on90 * 1e6:7.1f} µs | "
        f"on - off (p50) {(on50 - off50) * 1e6:+.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    each = max(args.steps // args.rounds, 1)
    base = Path(tempfile.mkdtemp(prefix="durapod-bench-"))
    base.chmod(0o755)
    server = PostgresServer(base / "pg")
    (base / "cluster").mkdir()
    cluster = LocalCluster(base / "cluster")
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert receiver.stdout is not None
    receiver_url = receiver.stdout.readline().decode().strip()
    apis: list[subprocess.Popen[bytes]] = []
    try:
        dsn = server.start()
        store.migrate(dsn)
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url, "OTEL_SERVICE_NAME": "bench"}
        urls = {}
        for on in (False, True):
            urls[on], api = serve_api(dsn, cluster, otel if on else {})
            apis.append(api)
        os.environ.update({**otel, "TRACEPARENT": TRACEPARENT})
        runner = Runner()
        bare: dict[bool, list[float]] = {False: [], True: []}
        path: dict[bool, list[float]] = {False: [], True: []}
        # Rounds alternate off and on: the machine's load changes, both sides see it.
        for round in range(args.rounds + 1):
            for on in (False, True):
                runner.traced(on)
                bare_times = asyncio.run(bare_steps(each))
                path_times = path_steps(dsn, cluster, urls[on], each)
                if round:  # the first round warms up
                    bare[on] += bare_times
                    path[on] += path_times
                tracing.flush()
        show("runner alone (no I/O)", bare[False], bare[True])
        show("step runner→API→PG (1 KiB)", path[False], path[True])
        for api in apis:
            api.terminate()
            api.wait(10)  # the API flushes its spans as it exits
        received = receiver.communicate(b"", timeout=30)[0].decode().strip()
        print(f"{len(path[False])} steps each; spans received: {received}")
    finally:
        for api in apis:
            if api.poll() is None:
                api.kill()
        if receiver.poll() is None:
            receiver.kill()
        server.stop("immediate")
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
