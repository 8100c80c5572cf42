"""Drive each TaskRun forward from what is observed: the run, its pod, its records.

Level-triggered: every TaskRun or pod event, timer and checkpoint notification calls in
here, and the decision is taken again from the current state, so an event seen twice,
late, or after an operator restart does no harm. Every status write is guarded by the
resourceVersion it was decided on; on a conflict the run is read again and the decision
taken anew. Pods are named ``<run>-<n>`` and the run's ``status.pods`` is raised before
pod ``n`` is created, so no restart or race can give one pod index two pods.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from durapod.durations import format_duration, parse_duration
from durapod.operator import pods, verdicts
from durapod.operator.background import spawn
from durapod.operator.kube import Conflict, Kube, QuotaExceeded, now
from durapod.operator.settings import Settings
from durapod.operator.verdicts import Outcome, Verdict
from durapod.resources.models import (
    DEFAULT_KEY_TTL,
    MAX_PAYLOAD_BYTES,
    Phase,
    TaskDefinitionSpec,
)
from durapod.store import Pool, checkpoints, idempotency, queues, runs
from durapod.store import pods as pod_records

log = logging.getLogger("durapod.operator")
Obj = dict[str, Any]
CONFLICT_RETRIES = 8
LIVE = (Phase.STARTING, Phase.RESUMING, Phase.RUNNING)
#: What a queued run does once admitted (status.admitAs).
ADMIT_START, ADMIT_RETRY, ADMIT_RESUME, ADMIT_POD = "start", "retry", "resume", "pod"


def conditions(phase: Phase, message: str = "") -> list[Obj]:
    """Ready / Succeeded / Failed, so ``kubectl wait --for=condition=Succeeded`` works."""
    stamp = now()
    states = {
        "Ready": not phase.finished,
        "Succeeded": phase == Phase.SUCCEEDED,
        "Failed": phase.finished and phase != Phase.SUCCEEDED,
    }
    return [
        {
            "type": kind,
            "status": "True" if state else "False",
            "reason": phase.value,
            "message": message,
            "lastTransitionTime": stamp,
        }
        for kind, state in states.items()
    ]


def _parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Reconciler:
    def __init__(self, settings: Settings, pool: Pool, kube: Kube) -> None:
        self.settings = settings
        self.pool = pool
        self.kube = kube
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._timers: dict[str, asyncio.Task[None]] = {}
        #: Runs whose pod a ResourceQuota refused, by namespace.
        self._blocked: dict[str, set[str]] = {}

    # -- entry points ------------------------------------------------------------------

    async def run_changed(self, run: Obj) -> None:
        meta = run["metadata"]
        await self._locked(meta["namespace"], meta["name"], self._advance, run)

    async def run_deleted(self, run: Obj) -> None:
        """The TaskRun is gone (its pods go with it): an unfinished run is Cancelled."""
        status = run.get("status") or {}
        if status.get("phase") and not Phase(status["phase"]).finished:
            await runs.set_status(
                self.pool, UUID(run["metadata"]["uid"]), Phase.CANCELLED.value, finished=True
            )
            await self._release(run)
        self._cancel_timer(f"{run['metadata']['namespace']}/{run['metadata']['name']}")

    async def pod_changed(self, event: str, pod: Obj) -> None:
        meta = pod["metadata"]
        run_name = (meta.get("labels") or {}).get(pods.LABEL_RUN)
        if run_name:
            await self._locked(meta["namespace"], run_name, self._observe_pod, None, event, pod)

    async def checkpoint_written(self, run_id: UUID, step: str) -> None:
        """Show the latest step in ``status.lastCheckpoint``."""
        record = await runs.get(self.pool, run_id)
        if record is None:
            return
        await self.kube.merge_status(
            "taskruns",
            record.namespace,
            record.name,
            {"lastCheckpoint": {"step": step, "at": now()}},
        )

    async def _locked(
        self,
        namespace: str,
        name: str,
        step: Callable[..., Awaitable[None]],
        run: Obj | None,
        *args: Any,
    ) -> None:
        """Run ``step(run, *args)`` alone for this run, re-reading it after a conflict."""
        async with self._locks[f"{namespace}/{name}"]:
            for _ in range(CONFLICT_RETRIES):
                current = run or await self.kube.get_taskrun(namespace, name)
                if current is None:
                    return
                try:
                    await step(current, *args)
                    return
                except Conflict:
                    run = None
            log.warning("run %s/%s: gave up after %d conflicts", namespace, name, CONFLICT_RETRIES)

    # -- timers ------------------------------------------------------------------------

    def _wake_at(self, run: Obj, when: datetime) -> None:
        """Reconcile the run again at ``when`` (timers are rebuilt from status on restart)."""
        meta = run["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        self._cancel_timer(key)
        delay = max((when - datetime.now(UTC)).total_seconds(), 0.0)

        async def fire() -> None:
            await asyncio.sleep(delay)
            self._timers.pop(key, None)
            await self._locked(meta["namespace"], meta["name"], self._advance, None)

        self._timers[key] = spawn(fire(), f"timer of run {key}")

    def _cancel_timer(self, key: str) -> None:
        if (timer := self._timers.pop(key, None)) is not None and not timer.done():
            timer.cancel()

    # -- the run's phases --------------------------------------------------------------

    async def _advance(self, run: Obj) -> None:
        status = run.get("status") or {}
        phase = Phase(status["phase"]) if status.get("phase") else None
        if phase is not None and phase.finished:
            await self._release(run)  # if a crash came between finishing and releasing
            await self._expire(run)
        elif run["spec"].get("cancel"):
            await self._stop(run, Phase.CANCELLED, "cancelled by spec.cancel")
        elif phase is None or phase == Phase.PENDING:
            await self._admit(run)
        elif phase in LIVE:
            await self._check_pod(run)
        elif phase == Phase.QUEUED:
            await self._queued(run)
        elif phase == Phase.RETRYING:
            await self._when_due(run, lambda: self._queue(run, ADMIT_RETRY))
        elif phase == Phase.WAITING:
            await self._waiting(run)

    async def _when_due(self, run: Obj, start: Callable[[], Awaitable[None]]) -> None:
        due = _parse_time(run["status"]["resumeAt"])
        if datetime.now(UTC) >= due:
            await start()
        else:
            self._wake_at(run, due)

    def _not_before(self, run: Obj) -> datetime | None:
        """When a delayed run (``spec.delay`` or ``spec.notBefore``) may start."""
        spec = run["spec"]
        if spec.get("notBefore"):
            return _parse_time(spec["notBefore"])
        if spec.get("delay"):
            created = _parse_time(run["metadata"]["creationTimestamp"])
            return created + parse_duration(spec["delay"])
        return None

    async def _admit(self, run: Obj) -> None:
        meta, spec = run["metadata"], run["spec"]
        start_at = self._not_before(run)
        if start_at is not None and start_at > datetime.now(UTC):
            if (run.get("status") or {}).get("resumeAt") != _stamp(start_at):
                message = f"delayed until {_stamp(start_at)}"
                run = await self.kube.patch_run_status(
                    run,
                    {
                        "phase": Phase.PENDING.value,
                        "resumeAt": _stamp(start_at),
                        "conditions": conditions(Phase.PENDING, message),
                    },
                )
            self._wake_at(run, start_at)
            return
        td = await self.kube.get_taskdefinition(meta["namespace"], spec["task"])
        if td is None:
            await self._unknown_task(run)
            return
        size = len(json.dumps(spec.get("payload") or {}, separators=(",", ":")))
        if size > MAX_PAYLOAD_BYTES:
            await self._finish(
                run,
                Phase.FAILED,
                error={
                    "type": "PayloadTooLarge",
                    "reason": "PayloadTooLarge",
                    "message": f"payload is {size} bytes, over the limit of "
                    f"{MAX_PAYLOAD_BYTES} bytes",
                },
            )
            return
        try:
            definition = TaskDefinitionSpec.model_validate(td["spec"])
        except ValidationError as exc:
            await self._finish(
                run,
                Phase.FAILED,
                error={
                    "type": "InvalidTaskDefinition",
                    "reason": "UnknownTask",
                    "message": f"TaskDefinition {spec['task']!r} is invalid: {exc}",
                },
            )
            return
        if spec.get("idempotencyKey") and not await self._holds_key(run):
            return
        pinned = definition.model_dump(by_alias=True, exclude_none=True, mode="json")
        await runs.admit(
            self.pool,
            run_id=UUID(meta["uid"]),
            namespace=meta["namespace"],
            name=meta["name"],
            task=spec["task"],
            payload=spec.get("payload") or {},
            definition=pinned,
            tags=spec.get("tags") or [],
        )
        # The first pod's status patch pins the definition too: one write, nothing half-done.
        admitted = {**run, "status": {**(run.get("status") or {}), "definition": pinned}}
        await self._queue(admitted, ADMIT_START, pin=pinned)

    async def _holds_key(self, run: Obj) -> bool:
        """Claim the run's idempotency key; a run whose key another run holds never starts."""
        meta, spec = run["metadata"], run["spec"]
        ttl = parse_duration(spec.get("idempotencyKeyTTL") or DEFAULT_KEY_TTL)
        claim = await idempotency.claim(
            self.pool,
            idempotency.Request(
                meta["namespace"], spec["task"], spec["idempotencyKey"], meta["name"], ttl
            ),
        )
        if claim.ours:
            return True
        message = f"idempotency key {spec['idempotencyKey']!r} belongs to run {claim.run_name}"
        await self._finish(
            run,
            Phase.CANCELLED,
            error={"type": "Duplicate", "reason": "Duplicate", "message": message},
            also={"duplicateOf": claim.run_name},
        )
        return False

    # -- queues ------------------------------------------------------------------------

    async def _queue(self, run: Obj, admit_as: str, pin: Obj | None = None) -> None:
        """Put the run in line for a slot of its queue; its next pod starts on admission."""
        definition = TaskDefinitionSpec.model_validate(pin or run["status"]["definition"])
        queue = definition.queue
        message = f"waiting for a slot in queue {queue.name}"
        run = await self.kube.patch_run_status(
            run,
            {
                "phase": Phase.QUEUED.value,
                "admitAs": admit_as,
                "resumeAt": None,
                "waitingFor": None,
                "conditions": conditions(Phase.QUEUED, message),
                **(
                    {"definition": pin, "attempt": 0, "pods": 0, "machine": definition.machine}
                    if pin
                    else {}
                ),
            },
        )
        await runs.set_status(self.pool, UUID(run["metadata"]["uid"]), Phase.QUEUED.value)
        await self._enqueue(run, definition)

    async def _enqueue(self, run: Obj, definition: TaskDefinitionSpec) -> None:
        """Put the run in line (idempotent) and let the queue hand out free slots."""
        queue = definition.queue
        await queues.enqueue(
            self.pool,
            UUID(run["metadata"]["uid"]),
            run["metadata"]["namespace"],
            queue.name,
            queue.concurrency_limit,
            queue.concurrency_key_limit,
            run["spec"].get("concurrencyKey"),
            run["spec"].get("priority", 0),
        )
        self._spawn_refill(run["metadata"]["namespace"], queue.name)

    async def _queued(self, run: Obj) -> None:
        """A queued run: start its pod once it holds a slot."""
        status = run["status"]
        run_id = UUID(run["metadata"]["uid"])
        if not await queues.holds_slot(self.pool, run_id):
            await self._enqueue(run, self._definition(run))
            return
        admit_as = status.get("admitAs") or ADMIT_START
        if admit_as == ADMIT_POD:  # the pod was refused by a ResourceQuota: try again
            remaining = await self._remaining_seconds(run_id, self._definition(run))
            run = await self.kube.patch_run_status(
                run,
                {
                    "phase": Phase.STARTING.value,
                    "conditions": conditions(Phase.STARTING, f"creating pod {status['podName']}"),
                },
            )
            await self._create_pod(run, remaining)
        elif admit_as == ADMIT_RESUME:
            await self._next_pod(run, Phase.RESUMING)
        else:
            await self._next_pod(run, Phase.STARTING, attempt=+1)

    async def _release(self, run: Obj) -> None:
        if (freed := await queues.release(self.pool, UUID(run["metadata"]["uid"]))) is not None:
            self._spawn_refill(*freed)

    def _spawn_refill(self, namespace: str, queue: str) -> None:
        spawn(self._refill(namespace, queue), f"refill of queue {namespace}/{queue}")

    async def _refill(self, namespace: str, queue: str) -> None:
        """Hand free slots to waiting runs and start them (outside any run's lock)."""
        for _, name in await queues.admit(self.pool, namespace, queue):
            await self._locked(namespace, name, self._advance, None)

    def _spawn_unblock(self, namespace: str) -> None:
        """A pod ended: runs a ResourceQuota refused may fit now."""
        if blocked := self._blocked.pop(namespace, set()):
            spawn(self._unblock(namespace, blocked), f"quota retry in {namespace}")

    async def _unblock(self, namespace: str, names: set[str]) -> None:
        for name in sorted(names):
            await self._locked(namespace, name, self._advance, None)

    async def _unknown_task(self, run: Obj) -> None:
        meta = run["metadata"]
        message = (
            f'TaskDefinition "{run["spec"]["task"]}" not found in namespace "{meta["namespace"]}"'
        )
        waited = datetime.now(UTC) - _parse_time(meta["creationTimestamp"])
        grace = timedelta(seconds=self.settings.unknown_task_grace_seconds)
        if waited >= grace:
            await self._finish(
                run,
                Phase.FAILED,
                error={"type": "UnknownTask", "reason": "UnknownTask", "message": message},
            )
            return
        if (run.get("status") or {}).get("phase") != Phase.PENDING.value:
            run = await self.kube.patch_run_status(
                run,
                {
                    "phase": Phase.PENDING.value,
                    "conditions": conditions(Phase.PENDING, message + "; waiting for it"),
                },
            )
        self._wake_at(run, datetime.now(UTC) + grace - waited)

    def _definition(self, run: Obj) -> TaskDefinitionSpec:
        return TaskDefinitionSpec.model_validate(run["status"]["definition"])

    async def _next_pod(
        self,
        run: Obj,
        phase: Phase,
        attempt: int = 0,
        resumes: int = 0,
        machine: str | None = None,
        pin: Obj | None = None,
    ) -> None:
        """Start the run's next pod: raise ``status.pods`` first, then create the pod."""
        status = run["status"]
        meta = run["metadata"]
        run_id = UUID(meta["uid"])
        definition = self._definition(run)
        index = int(status.get("pods") or 0) + 1
        number = int(status.get("attempt") or 0) + attempt
        machine = machine or status.get("machine") or definition.machine
        remaining = await self._remaining_seconds(run_id, definition)
        if remaining is not None and remaining <= 0:
            await self._finish(run, Phase.TIMED_OUT, error=self._timeout_error(definition))
            return
        name = pods.pod_name(meta["name"], index)
        run = await self.kube.patch_run_status(
            run,
            {
                "phase": phase.value,
                "attempt": number,
                "resumes": int(status.get("resumes") or 0) + resumes,
                "pods": index,
                "podName": name,
                "machine": machine,
                "resumeAt": None,
                "waitingFor": None,
                "conditions": conditions(phase, f"attempt {number}: starting pod {name}"),
                **({"definition": pin} if pin else {}),
            },
        )
        await runs.set_status(self.pool, run_id, phase.value, attempt=number)
        await pod_records.create(self.pool, run_id, index, number, name, machine)
        await self._create_pod(run, remaining)

    async def _create_pod(self, run: Obj, remaining: float | None) -> None:
        status = run["status"]
        manifest = pods.build(
            run,
            self._definition(run),
            status["attempt"],
            status["pods"],
            status["machine"],
            remaining,
            self.settings,
        )
        try:
            created = await self.kube.create_pod(manifest)
        except QuotaExceeded as exc:
            await self._quota_refused(run, str(exc))
            return
        await pod_records.in_cluster(self.pool, UUID(run["metadata"]["uid"]), status["pods"])
        if created:
            await self.kube.event(
                run,
                "PodCreated",
                f"attempt {status['attempt']}: created "
                f"pod {status['podName']} ({status['machine']})",
            )

    async def _quota_refused(self, run: Obj, why: str) -> None:
        """Back-pressure, not failure: the run waits, with its slot, for a pod to end."""
        meta = run["metadata"]
        self._blocked.setdefault(meta["namespace"], set()).add(meta["name"])
        run = await self.kube.patch_run_status(
            run,
            {
                "phase": Phase.QUEUED.value,
                "admitAs": ADMIT_POD,
                "conditions": conditions(Phase.QUEUED, why),
            },
        )
        await self.kube.event(
            run, "QuotaExceeded", f"pod {run['status']['podName']} waits: {why}", warning=True
        )

    async def _remaining_seconds(
        self, run_id: UUID, definition: TaskDefinitionSpec
    ) -> float | None:
        """What is left of maxDuration: it counts the time the run's pods have run."""
        if not definition.max_duration:
            return None
        used = timedelta()
        for record in await pod_records.for_run(self.pool, run_id):
            if record.started_at is not None:
                used += (record.finished_at or datetime.now(UTC)) - record.started_at
        return (parse_duration(definition.max_duration) - used).total_seconds()

    def _timeout_error(self, definition: TaskDefinitionSpec) -> Obj:
        return {
            "type": "TimedOut",
            "reason": "TimedOut",
            "message": f"the run used up its maxDuration of {definition.max_duration}",
        }

    async def _check_pod(self, run: Obj) -> None:
        """A live run's pod: create it if it never was; judge it if it vanished unseen.

        The record is read before the pod: ``in_cluster`` is set only once the pod exists,
        so a pod missing after that was really deleted (not still being created).
        """
        status = run["status"]
        namespace = run["metadata"]["namespace"]
        run_id = UUID(run["metadata"]["uid"])
        record = await pod_records.get(self.pool, run_id, status["pods"])
        if record is None or not record.in_cluster:  # maybe never created: create it (or 409)
            if record is None:
                await pod_records.create(
                    self.pool,
                    run_id,
                    status["pods"],
                    status["attempt"],
                    status["podName"],
                    status["machine"],
                )
            remaining = await self._remaining_seconds(run_id, self._definition(run))
            await self._create_pod(run, remaining)
            return
        if await self.kube.pod_exists(namespace, status["podName"]):
            return
        gone = {
            "metadata": {"name": status["podName"], "namespace": namespace},
            "status": {"phase": "Unknown"},
        }
        await self._observe_pod(run, "DELETED", gone)

    async def _waiting(self, run: Obj) -> None:
        status = run["status"]
        if status.get("resumeAt"):
            await self._when_due(run, lambda: self._queue(run, ADMIT_RESUME))
            return
        child_name = status.get("waitingFor")
        if not child_name:
            return
        child = await self.kube.get_taskrun(run["metadata"]["namespace"], child_name)
        child_status = (child or {}).get("status") or {}
        if child is not None and not (
            child_status.get("phase") and Phase(child_status["phase"]).finished
        ):
            return  # the child's own events bring us back here
        if child is None:
            outcome: Obj = {
                "error": {"type": "ChildRunLost", "message": f"child run {child_name} was deleted"}
            }
        elif child_status["phase"] == Phase.SUCCEEDED.value:
            outcome = {"output": child_status.get("output")}
        else:
            outcome = {
                "error": child_status.get("error")
                or {
                    "type": child_status["phase"],
                    "message": f"child run ended {child_status['phase']}",
                }
            }
        await checkpoints.record_next(
            self.pool, UUID(run["metadata"]["uid"]), f"$wait:{child_name}", outcome
        )
        await self._queue(run, ADMIT_RESUME)

    async def _expire(self, run: Obj) -> None:
        """Delete a finished run once its TTL has passed."""
        status = run["status"]
        if not status.get("finishedAt") or not status.get("definition"):
            return
        ttl = run["spec"].get("ttl") or status["definition"].get("ttl") or "7d"
        due = _parse_time(status["finishedAt"]) + parse_duration(ttl)
        if datetime.now(UTC) >= due:
            await self.kube.delete_taskrun(run["metadata"]["namespace"], run["metadata"]["name"])
        else:
            self._wake_at(run, due)

    # -- pods --------------------------------------------------------------------------

    async def _observe_pod(self, run: Obj, event: str, pod: Obj) -> None:
        status = run.get("status") or {}
        owners = pod["metadata"].get("ownerReferences")
        if owners is not None and not any(o.get("uid") == run["metadata"]["uid"] for o in owners):
            return  # the pod of an earlier run of the same name
        if not status.get("phase") or Phase(status["phase"]) not in LIVE:
            return
        if pod["metadata"]["name"] != status.get("podName"):
            return  # an earlier pod of this run
        deleted = event == "DELETED"
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and not deleted:
            if (pod.get("status") or {}).get("phase") == "Running" and status["phase"] != "Running":
                await self._running(run)
            return  # still going: no need to read what its runner reported
        run_id = UUID(run["metadata"]["uid"])
        record = await pod_records.get(self.pool, run_id, status["pods"])
        reported = (
            {"output": record.output, "error": record.error, "suspend": record.suspend}
            if record
            else {}
        )
        verdict = verdicts.judge(pod, deleted, reported)
        assert verdict is not None  # the pod has ended
        await pod_records.finished(self.pool, run_id, status["pods"], verdict.outcome.value)
        await self._after(run, verdict, reported)

    async def _running(self, run: Obj) -> None:
        status = run["status"]
        run_id = UUID(run["metadata"]["uid"])
        await self.kube.patch_run_status(
            run,
            {
                "phase": Phase.RUNNING.value,
                "startedAt": status.get("startedAt") or now(),
                "conditions": conditions(Phase.RUNNING, f"running in pod {status['podName']}"),
            },
        )
        await pod_records.started(self.pool, run_id, status["pods"])
        await runs.set_status(self.pool, run_id, Phase.RUNNING.value, started=True)
        await self.kube.event(
            run, "Running", f"attempt {status['attempt']} is running in pod {status['podName']}"
        )

    async def _after(self, run: Obj, verdict: Verdict, reported: Obj) -> None:
        """Act on how the run's pod ended."""
        status = run["status"]
        definition = self._definition(run)
        self._spawn_unblock(run["metadata"]["namespace"])
        if verdict.outcome != Outcome.EVICTED:  # a resume keeps the slot: no gap, no queue
            await self._release(run)
        if verdict.outcome == Outcome.SUCCEEDED:
            await self._finish(run, Phase.SUCCEEDED, output=reported.get("output"))
        elif verdict.outcome == Outcome.SUSPENDED:
            await self._suspend(run, reported["suspend"])
        elif verdict.outcome == Outcome.TIMED_OUT:
            await self._finish(run, Phase.TIMED_OUT, error=self._timeout_error(definition))
        elif verdict.outcome == Outcome.EVICTED:
            if int(status.get("resumes") or 0) >= definition.max_resumes:
                await self._finish(
                    run,
                    Phase.FAILED,
                    error={
                        "type": "TooManyResumes",
                        "reason": "TooManyResumes",
                        "message": f"{verdict.detail}; the run already resumed "
                        f"{definition.max_resumes} times (maxResumes)",
                    },
                )
                return
            await self.kube.event(
                run, "Evicted", f"{verdict.detail}; resuming from the last checkpoint", warning=True
            )
            await self._next_pod(run, Phase.RESUMING, resumes=+1)
        else:
            await self._retry_or_fail(run, verdict, definition)

    async def _retry_or_fail(
        self, run: Obj, verdict: Verdict, definition: TaskDefinitionSpec
    ) -> None:
        status = run["status"]
        error = verdict.error or {}
        delay = verdicts.retry_delay(definition.retry, int(status["attempt"]), error)
        if delay is None:
            await self._finish(run, Phase.FAILED, error=error)
            return
        machine = status.get("machine") or definition.machine
        on_oom = definition.retry.on_oom
        if verdict.outcome == Outcome.OOM_KILLED and on_oom and on_oom.upgrade_machine:
            machine = verdicts.next_machine(machine)
        due = datetime.now(UTC) + delay
        run = await self.kube.patch_run_status(
            run,
            {
                "phase": Phase.RETRYING.value,
                "resumeAt": _stamp(due),
                "machine": machine,
                "error": {k: v for k, v in error.items() if k != "retryable"},
                "conditions": conditions(Phase.RETRYING, verdict.detail),
            },
        )
        await runs.set_status(self.pool, UUID(run["metadata"]["uid"]), Phase.RETRYING.value)
        await self.kube.event(
            run,
            "Retrying",
            f"attempt {status['attempt']} failed "
            f"({verdict.detail}); retrying in "
            f"{format_duration(delay)} on {machine}",
            warning=True,
        )
        self._wake_at(run, due)

    async def _suspend(self, run: Obj, suspend: Obj) -> None:
        patch: Obj = {"phase": Phase.WAITING.value}
        if suspend.get("until"):
            patch["resumeAt"] = suspend["until"]
            message = f"sleeping until {suspend['until']}"
        else:
            patch["waitingFor"] = suspend["child"]
            message = f"waiting for child run {suspend['child']}"
        # The pod's part is done and checkpointed: a waiting run keeps no pod object. It goes
        # before the status says Waiting (a restart in between judges the pod again).
        await self.kube.delete_pod(run["metadata"]["namespace"], run["status"]["podName"])
        run = await self.kube.patch_run_status(
            run, {**patch, "conditions": conditions(Phase.WAITING, message)}
        )
        await runs.set_status(self.pool, UUID(run["metadata"]["uid"]), Phase.WAITING.value)
        await self.kube.event(run, "Waiting", f"{message}; no pod is held")
        await self._waiting(run)

    async def _stop(self, run: Obj, phase: Phase, message: str) -> None:
        """End a live run from outside (cancel): its pod is terminated gracefully."""
        status = run.get("status") or {}
        if status.get("podName"):
            await self.kube.delete_pod(run["metadata"]["namespace"], status["podName"])
            run_id = UUID(run["metadata"]["uid"])
            await pod_records.finished(self.pool, run_id, int(status.get("pods") or 1), phase.value)
        await self._finish(
            run, phase, error={"type": phase.value, "reason": phase.value, "message": message}
        )

    async def _finish(
        self,
        run: Obj,
        phase: Phase,
        *,
        output: Any = None,
        error: Obj | None = None,
        also: Obj | None = None,
    ) -> None:
        run_id = UUID(run["metadata"]["uid"])
        record = await runs.get(self.pool, run_id)
        patch: Obj = {
            "phase": phase.value,
            "finishedAt": now(),
            "resumeAt": None,
            "waitingFor": None,
        }
        if record is not None and record.started_at is not None:
            patch["duration"] = format_duration(datetime.now(UTC) - record.started_at)
        if phase == Phase.SUCCEEDED:
            patch.update(output=output, error=None)
            message = "the task returned"
        else:
            assert error is not None
            patch["error"] = {k: v for k, v in error.items() if k != "retryable"}
            message = f"{error.get('reason') or error['type']}: {error['message']}"
        patch["conditions"] = conditions(phase, message)
        run = await self.kube.patch_run_status(run, {**patch, **(also or {})})
        await self._release(run)
        if record is not None:
            await runs.finish(
                self.pool, run_id, phase.value, output=output, error=patch.get("error")
            )
        await self.kube.event(run, phase.value, message, warning=phase != Phase.SUCCEEDED)
        await self._expire(run)
        await self._notify_parent(run)

    async def _notify_parent(self, run: Obj) -> None:
        parent = run["spec"].get("parent")
        if parent:
            await self._locked(run["metadata"]["namespace"], parent["name"], self._advance, None)
