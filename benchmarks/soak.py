"""The chaos soak: many multi-step runs while everything that can die dies.

``durapod dev``'s stack (a private PostgreSQL, the stand-in cluster and kubelet, N operator
and M API replicas as processes) runs ``tests.tasks:soak`` in three queues (some runs
sleeping durably, some waiting for a child run in a fourth queue) while the soak
SIGKILLs pods mid-step, evicts pods through the eviction subresource, OOM-kills some
(their first attempt holds too much memory), SIGKILLs operator replicas and an API
replica, restarts PostgreSQL with ``-m immediate`` and terminates every backend. Faults
are paced by the operators' progress (committed transitions), never by the clock, so a
slow machine slows the faults down with the work. Then it checks, within a deadline:
every run Succeeded with the output it should have; each step's idempotent side effect
is there exactly once; no
checkpointed step ran again; no queue held more pods than its limit at any sample; no pod
name had two pods; every record agrees with its TaskRun status; no 5xx without
Retry-After. ``python benchmarks/soak.py --runs 300 --seed N`` is the long mode; a failing
seed reproduces the same fault plan.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from durapod.dev.stack import Stack  # noqa: E402

QUEUES = {"soak-a": 3, "soak-b": 3, "soak-c": 2}
#: Child runs (``ctx.trigger_and_wait``) have a queue of their own.
CHILD_QUEUE = ("soak-child", 2)
FINISHED = {"Succeeded", "Failed", "Cancelled", "TimedOut"}
Obj = dict[str, Any]


@dataclass
class Config:
    runs: int = 60
    steps: int = 5
    operators: int = 2
    apis: int = 2
    seed: int = field(default_factory=lambda: random.randrange(1 << 30))
    #: Seconds each step takes.
    seconds: float = 0.3
    #: Every this many runs, one's first attempt is OOM-killed.
    oom_every: int = 15
    #: Every this many runs, one sleeps durably (Waiting, no pod) after its second step.
    sleep_every: int = 5
    #: Every this many runs, one waits for a child run after its third step.
    child_every: int = 7
    #: Same-key trigger pairs (each must make one run).
    key_pairs: int = 10
    #: Faults of each kind (operator, pod and API replica kills, evictions).
    operator_kills: int = 6
    pod_kills: int = 8
    evictions: int = 8
    #: Seconds for everything to finish after the last fault (a bound, not a goal).
    deadline: float = 600.0


@dataclass
class Report:
    seed: int
    runs: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    missing_effects: list[str] = field(default_factory=list)
    doubled_effects: list[str] = field(default_factory=list)
    reexecuted: list[str] = field(default_factory=list)
    wrong_outputs: list[str] = field(default_factory=list)
    #: Durable sleeps and child runs the runs went through.
    exercised: Counter[str] = field(default_factory=Counter)
    over_limit: list[str] = field(default_factory=list)
    doubled_pods: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    bare_5xx: list[str] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0

    #: The violations: each must be empty.
    VIOLATIONS: ClassVar[tuple[str, ...]] = (
        "stuck",
        "missing_effects",
        "doubled_effects",
        "reexecuted",
        "wrong_outputs",
        "over_limit",
        "doubled_pods",
        "disagreements",
        "bare_5xx",
    )

    @property
    def ok(self) -> bool:
        clean = not any(getattr(self, name) for name in self.VIOLATIONS)
        return clean and self.phases.get("Succeeded", 0) == self.runs

    def summary(self) -> str:
        lines = [
            f"seed {self.seed}: {self.runs} runs, {dict(self.phases)} in {self.seconds:.0f}s",
            f"faults: {dict(self.faults)}; {self.samples} samples",
            f"exercised: {dict(self.exercised)}",
        ]
        for name in self.VIOLATIONS:
            found = getattr(self, name)
            lines.append(f"{name}: {len(found)} {found[:10] if found else ''}")
        return "\n".join(lines)


class Soak:
    def __init__(self, config: Config, home: Path) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.report = Report(config.seed)
        self.stack = Stack(
            home=home,
            workdir=REPO,
            pg_settings={"fsync": "off", "full_page_writes": "off"},
            operators=config.operators,
            apis=config.apis,
        )
        self.names: list[str] = []
        self.expected: dict[str, Obj] = {}
        self.pod_uids: dict[str, set[str]] = defaultdict(set)
        self.http: httpx.AsyncClient | None = None

    # -- the stack ---------------------------------------------------------------------

    async def kube(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self.http is not None
        return await self.http.request(method, self.stack.kube_url + path, **kwargs)

    def db(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.stack.database_url, autocommit=True, connect_timeout=5)

    async def run(self) -> Report:
        started = time.monotonic()
        await self.stack.start()
        self.http = httpx.AsyncClient(
            timeout=30, headers={"Authorization": f"Bearer {self.stack.admin_token}"}
        )
        try:
            await self._prepare()
            sampler = asyncio.create_task(self._sample_forever())
            await self._trigger()
            await self._faults()
            await self._wait_finished()
            sampler.cancel()
            await self._check()
        finally:
            await self.http.aclose()
            await self.stack.stop()
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _prepare(self) -> None:
        with self.db() as conn:
            conn.execute(
                "CREATE TABLE soak_executions (run text, step text, pod text, "
                "at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            conn.execute("CREATE TABLE soak_effects (key text PRIMARY KEY, run text, step text)")
        for queue, limit in (*QUEUES.items(), CHILD_QUEUE):
            spec = {
                "image": "durapod:dev",
                "entrypoint": "tests.tasks:double"
                if queue == CHILD_QUEUE[0]
                else "tests.tasks:soak",
                "machine": "micro" if queue == "soak-c" else "small-1x",
                "queue": {"name": queue, "concurrencyLimit": limit},
                "retry": {
                    "maxAttempts": 20,
                    "minDelay": "100ms",
                    "maxDelay": "1s",
                    "onOOM": {"upgradeMachine": True},
                },
                "maxResumes": 100,
            }
            body = {
                "apiVersion": "durapod.io/v1",
                "kind": "TaskDefinition",
                "metadata": {"name": queue},
                "spec": spec,
            }
            response = await self.kube(
                "POST", "/apis/durapod.io/v1/namespaces/default/taskdefinitions", json=body
            )
            assert response.status_code == 201, response.text

    # -- triggers ----------------------------------------------------------------------

    def _payload(self, i: int, queue: str) -> Obj:
        payload: Obj = {
            "dsn": self.stack.database_url,
            "steps": self.config.steps,
            "seconds": self.config.seconds,
        }
        if queue == "soak-c" and i % self.config.oom_every == 2:
            payload["hog"] = 400  # over micro's 256Mi: killed; retried on small-1x
        if i % self.config.sleep_every == 1:
            payload["sleep"] = "1s"
            self.report.exercised["sleep"] += 1
        if i % self.config.child_every == 3:
            payload["child"] = CHILD_QUEUE[0]
            self.report.exercised["child"] += 1
        payload["n"] = i
        return payload

    def _expected(self, payload: Obj) -> Obj:
        steps: list[Any] = [f"step-{k}" for k in range(1, payload["steps"] + 1)]
        if payload.get("child"):
            steps.insert(3, payload["n"] * 2)  # the child's output, before step 4
        return {"steps": steps}

    async def _trigger(self) -> None:
        """Half the runs by kubectl-style creates, half over HTTP with idempotency keys,
        some of those twice with the same key (one run each)."""
        queues = list(QUEUES)
        for i in range(self.config.runs):
            queue = queues[i % len(queues)]
            payload = self._payload(i, queue)
            if i % 2 == 0:
                name = f"soak-{i:04d}"
                body = {
                    "apiVersion": "durapod.io/v1",
                    "kind": "TaskRun",
                    "metadata": {"name": name},
                    "spec": {"task": queue, "payload": payload},
                }
                response = await self.kube(
                    "POST", "/apis/durapod.io/v1/namespaces/default/taskruns", json=body
                )
                assert response.status_code == 201, response.text
            else:
                key = f"soak-key-{i}"
                name = await self._post_run(queue, payload, key)
                if i // 2 < self.config.key_pairs:
                    again = await self._post_run(queue, payload, key)
                    assert again == name, f"same key, two runs: {name} and {again}"
            self.names.append(name)
            self.expected[name] = self._expected(payload)
        self.report.runs = len(self.names)

    async def _post_run(self, task: str, payload: Obj, key: str) -> str:
        """Trigger over HTTP as a careful client does: retry 503 after Retry-After, and
        connection failures, with the same idempotency key."""
        assert self.http is not None
        body = {"payload": payload, "idempotencyKey": key}
        for _ in range(200):
            url = self.rng.choice(self.stack.api_urls)
            try:
                response = await self.http.post(
                    f"{url}/v1/namespaces/default/tasks/{task}/runs",
                    json=body,
                    headers={"Authorization": f"Bearer {self.stack.api_token}"},
                )
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if response.status_code in (200, 202):
                name: str = response.json()["name"]
                return name
            if response.status_code >= 500:
                if "retry-after" not in response.headers:
                    self.report.bare_5xx.append(f"{response.status_code} {response.text[:200]}")
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                continue
            raise AssertionError(f"trigger answered {response.status_code}: {response.text}")
        raise AssertionError("trigger never succeeded")

    # -- faults ------------------------------------------------------------------------

    def _progress(self) -> int | None:
        """Committed transitions so far (None while the database is away)."""
        try:
            with self.db() as conn:
                row = conn.execute("SELECT coalesce(sum(version), 0) FROM runs").fetchone()
        except psycopg.OperationalError:
            return None
        return int(row[0]) if row else 0

    async def _after_progress(self, transitions: int) -> None:
        """Wait until the operators have committed ``transitions`` more (or all is done)."""
        start = None
        while start is None:
            start = await asyncio.to_thread(self._progress)
            await asyncio.sleep(0.1)
        while True:
            now = await asyncio.to_thread(self._progress)
            if now is not None and now - start >= transitions:
                return
            if await self._all_finished():
                return
            await asyncio.sleep(0.1)

    async def _faults(self) -> None:
        c = self.config
        plan = ["operator"] * c.operator_kills + ["pod"] * c.pod_kills + ["evict"] * c.evictions
        self.rng.shuffle(plan)
        # The one-off faults go in the first half: on a busy machine the runs can all end
        # before the plan does, and these must have happened while runs were live.
        for fault in ("api", "postgres", "backends"):
            plan.insert(self.rng.randint(0, len(plan) // 2), fault)
        # Spread over the soak: one fault per share of the transitions a soak commits.
        per_fault = max(2, (c.runs * 3) // (len(plan) + 1))
        for fault in plan:
            await self._after_progress(self.rng.randint(per_fault // 2, per_fault))
            if await self._all_finished():
                break
            inject = getattr(self, f"_fault_{fault}")
            for _ in range(50):  # a pod fault needs a running pod: wait for one
                if await inject():
                    self.report.faults[fault] += 1
                    break
                await asyncio.sleep(0.2)

    async def _fault_operator(self) -> bool:
        return self._kill_process(self.rng.choice([n for n in self.stack.processes if "op" in n]))

    async def _fault_api(self) -> bool:
        return self._kill_process(self.rng.choice([n for n in self.stack.processes if "api" in n]))

    def _kill_process(self, name: str) -> bool:
        process = self.stack.processes[name]
        if process.poll() is not None:
            return False
        process.send_signal(signal.SIGKILL)  # the stack restarts it, as a Deployment would
        return True

    async def _running_pods(self) -> list[Obj]:
        response = await self.kube("GET", "/api/v1/namespaces/default/pods")
        return [
            p
            for p in response.json()["items"]
            if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        ]

    async def _fault_pod(self) -> bool:
        """SIGKILL a running pod's process group (a crash mid-step)."""
        pods = await self._running_pods()
        self.rng.shuffle(pods)
        for pod in pods:
            statuses = pod["status"].get("containerStatuses") or []
            cid = statuses[0].get("containerID", "") if statuses else ""
            if cid.startswith("subprocess://"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(cid.removeprefix("subprocess://")), signal.SIGKILL)
                    return True
        return False

    async def _fault_evict(self) -> bool:
        for pod in await self._running_pods():
            name = pod["metadata"]["name"]
            eviction = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": name, "namespace": "default"},
            }
            response = await self.kube(
                "POST", f"/api/v1/namespaces/default/pods/{name}/eviction", json=eviction
            )
            if response.status_code == 201:
                return True
        return False

    async def _fault_postgres(self) -> bool:
        pg = self.stack._postgres
        assert pg is not None
        await asyncio.to_thread(pg.stop, "immediate")
        await asyncio.to_thread(pg.start)
        return True

    async def _fault_backends(self) -> bool:
        with self.db() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        return True

    # -- watching ----------------------------------------------------------------------

    async def _taskruns(self) -> list[Obj]:
        response = await self.kube("GET", "/apis/durapod.io/v1/namespaces/default/taskruns")
        items: list[Obj] = response.json()["items"]
        return items

    async def _all_finished(self) -> bool:
        runs = await self._taskruns()
        return len(runs) >= len(self.names) and all(
            (r.get("status") or {}).get("phase") in FINISHED for r in runs
        )

    async def _sample_forever(self) -> None:
        """Pods alive per queue never over the limit; a run never has two live pods; a pod
        name never has two pods."""
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await self.kube("GET", "/api/v1/namespaces/default/pods")
                alive: Counter[str] = Counter()
                per_run: Counter[str] = Counter()
                for pod in response.json()["items"]:
                    meta = pod["metadata"]
                    self.pod_uids[meta["name"]].add(meta["uid"])
                    if (pod.get("status") or {}).get("phase") in ("Pending", "Running", None):
                        alive[meta["labels"].get("durapod.io/queue", "")] += 1
                        per_run[meta["labels"].get("durapod.io/run", "")] += 1
                self.report.doubled_pods.extend(
                    f"{run}: {n} live pods at once" for run, n in per_run.items() if n > 1
                )
                limits = {**QUEUES, CHILD_QUEUE[0]: CHILD_QUEUE[1]}
                for queue, count in alive.items():
                    if count > limits.get(queue, 0):
                        self.report.over_limit.append(f"{queue}: {count} pods")
                self.report.samples += 1
            await asyncio.sleep(0.2)

    async def _wait_finished(self) -> None:
        deadline = time.monotonic() + self.config.deadline
        while time.monotonic() < deadline:
            if await self._all_finished() and not await self._disagreements():
                return
            await asyncio.sleep(0.5)

    async def _disagreements(self) -> list[str]:
        """Runs whose record and TaskRun status differ (phase, attempt, resumes, pods)."""
        runs = await self._taskruns()
        seen = {
            r["metadata"]["uid"]: (
                r["metadata"]["name"],
                tuple(
                    (r.get("status") or {}).get(k) for k in ("phase", "attempt", "resumes", "pods")
                ),
            )
            for r in runs
        }

        def records() -> dict[str, tuple[Any, ...]]:
            with self.db() as conn:
                rows = conn.execute(
                    "SELECT id::text, phase, attempt, resumes, pods FROM runs "
                    "WHERE id = ANY(%s::uuid[])",
                    (list(seen),),
                ).fetchall()
            return {row[0]: tuple(row[1:]) for row in rows}

        found = await asyncio.to_thread(records)
        return [
            f"{name}: record {found.get(uid)}, status {status}"
            for uid, (name, status) in seen.items()
            if found.get(uid) != status
        ]

    # -- verdict -----------------------------------------------------------------------

    async def _check(self) -> None:
        report = self.report
        runs = await self._taskruns()
        ours = {r["metadata"]["name"]: r for r in runs if r["metadata"]["name"] in self.expected}
        report.phases = Counter((r.get("status") or {}).get("phase", "") for r in ours.values())
        report.wrong_outputs = [
            f"{name}: {(run.get('status') or {}).get('output')}"
            for name, run in sorted(ours.items())
            if (run.get("status") or {}).get("output") != self.expected[name]
        ]
        report.stuck = sorted(
            r["metadata"]["name"]
            for r in runs
            if (r.get("status") or {}).get("phase") not in FINISHED
        )
        report.disagreements = await self._disagreements()
        report.doubled_pods += sorted(
            f"{n}: two pods of one name" for n, uids in self.pod_uids.items() if len(uids) > 1
        )
        with self.db() as conn:
            counts = {
                (run, step): n
                for run, step, n in conn.execute(
                    "SELECT run, step, count(*) FROM soak_effects GROUP BY run, step"
                )
            }
            # A step that ran after its checkpoint had been committed ran twice.
            report.reexecuted = [
                f"{run}/{step} in pod {pod}"
                for run, step, pod in conn.execute(
                    "SELECT e.run, e.step, e.pod FROM soak_executions e "
                    "JOIN runs r ON r.name = e.run AND r.removed_at IS NULL "
                    "JOIN checkpoints c ON c.run_id = r.id AND c.step = e.step "
                    "WHERE e.at > c.created_at"
                )
            ]
            oom = conn.execute("SELECT count(*) FROM pods WHERE outcome = 'OOMKilled'").fetchone()
            report.faults["oom"] = int(oom[0]) if oom else 0
        for name in self.names:
            for i in range(1, self.config.steps + 1):
                n = counts.get((name, f"step-{i}"), 0)
                if n == 0:
                    report.missing_effects.append(f"{name}/step-{i}")
                elif n > 1:
                    report.doubled_effects.append(f"{name}/step-{i}: {n}")


async def soak(config: Config, home: Path) -> Report:
    return await Soak(config, home).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--operators", type=int, default=3)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    config = Config(runs=args.runs, steps=args.steps, operators=args.operators, apis=args.apis)
    if args.seed is not None:
        config.seed = args.seed
    scale = max(1, args.runs // 60)
    config.operator_kills *= scale
    config.pod_kills *= scale
    config.evictions *= scale
    home = Path(tempfile.mkdtemp(prefix="durapod-soak-"))
    home.chmod(0o755)
    os.environ.setdefault("DURAPOD_RESYNC_SECONDS", "10")
    print(f"soak: seed {config.seed}, {config.runs} runs", flush=True)
    try:
        report = asyncio.run(soak(config, home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(report.summary())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
