"""Drive each TaskRun forward from what is observed: the run, its pod, its record.

Level-triggered: every TaskRun or pod event calls in here, and the decision is taken
again from the current state, so an event seen twice, late, or after an operator
restart does no harm. Every status write is guarded by the resourceVersion it was
decided on; on a conflict the run is read again and the decision taken anew.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from durapod.durations import format_duration
from durapod.operator import pods
from durapod.operator.kube import Conflict, Kube, now
from durapod.operator.settings import Settings
from durapod.resources.models import MAX_PAYLOAD_BYTES, Phase, TaskDefinitionSpec
from durapod.store import Pool, runs

log = logging.getLogger("durapod.operator")
Obj = dict[str, Any]
CONFLICT_RETRIES = 5


def conditions(phase: Phase, message: str = "") -> list[Obj]:
    """Ready / Succeeded / Failed, so ``kubectl wait --for=condition=Succeeded`` works."""
    stamp = now()
    finished = phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED, Phase.TIMED_OUT)
    states = {
        "Ready": not finished,
        "Succeeded": phase == Phase.SUCCEEDED,
        "Failed": finished and phase != Phase.SUCCEEDED,
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


def _duration(record: runs.Run | None) -> str | None:
    """How long the run has been running, from the precise start time in its record."""
    if record is None or record.started_at is None:
        return None
    return format_duration(datetime.now(UTC) - record.started_at)


def _pod_error(pod: Obj) -> Obj:
    """Why a pod failed when its runner could not say: from the container's last state."""
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    terminated = statuses[0].get("state", {}).get("terminated") or {}
    reason = pod.get("status", {}).get("reason") or terminated.get("reason") or "Error"
    code = terminated.get("exitCode")
    return {
        "type": "PodFailed",
        "reason": reason,
        "message": f"pod {pod['metadata']['name']} failed: {reason}"
        + (f", exit code {code}" if code is not None else ""),
    }


class Reconciler:
    def __init__(self, settings: Settings, pool: Pool, kube: Kube) -> None:
        self.settings = settings
        self.pool = pool
        self.kube = kube
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._later: set[asyncio.Task[None]] = set()

    async def run_changed(self, run: Obj) -> None:
        await self._with_retries(
            run["metadata"]["namespace"],
            run["metadata"]["name"],
            run,
            lambda current: self._advance(current),
        )

    async def pod_changed(self, event: str, pod: Obj) -> None:
        meta = pod["metadata"]
        run_name = (meta.get("labels") or {}).get(pods.LABEL_RUN)
        if not run_name:
            return
        await self._with_retries(
            meta["namespace"],
            run_name,
            None,
            lambda current: self._observe_pod(current, event, pod),
        )

    async def _with_retries(self, namespace: str, name: str, run: Obj | None, step: Any) -> None:
        async with self._locks[f"{namespace}/{name}"]:
            for _ in range(CONFLICT_RETRIES):
                current = run or await self.kube.get_taskrun(namespace, name)
                if current is None:
                    return
                try:
                    await step(current)
                    return
                except Conflict:
                    run = None  # read it again
            log.warning("run %s/%s: gave up after %d conflicts", namespace, name, CONFLICT_RETRIES)

    # -- TaskRun -----------------------------------------------------------------------

    async def _advance(self, run: Obj) -> None:
        status = run.get("status") or {}
        phase = Phase(status["phase"]) if status.get("phase") else None
        if phase is None or phase == Phase.PENDING:
            await self._admit(run)
        elif phase == Phase.STARTING:
            await self._ensure_pod(run)
        elif phase == Phase.RUNNING and not await self.kube.pod_exists(
            run["metadata"]["namespace"], status["podName"]
        ):
            await self._fail(
                run,
                {
                    "type": "PodLost",
                    "reason": "PodDeleted",
                    "message": f"pod {status['podName']} is gone",
                },
            )

    async def _admit(self, run: Obj) -> None:
        meta, spec = run["metadata"], run["spec"]
        td = await self.kube.get_taskdefinition(meta["namespace"], spec["task"])
        if td is None:
            await self._unknown_task(run)
            return
        size = len(json.dumps(spec.get("payload") or {}, separators=(",", ":")))
        if size > MAX_PAYLOAD_BYTES:
            await self._fail(
                run,
                {
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
            await self._fail(
                run,
                {
                    "type": "InvalidTaskDefinition",
                    "reason": "UnknownTask",
                    "message": f"TaskDefinition {spec['task']!r} is invalid: {exc}",
                },
            )
            return
        pinned = definition.model_dump(by_alias=True, exclude_none=True)
        await runs.admit(
            self.pool,
            run_id=UUID(meta["uid"]),
            namespace=meta["namespace"],
            name=meta["name"],
            task=spec["task"],
            payload=spec.get("payload") or {},
            definition=pinned,
        )
        attempt = 1
        run = await self.kube.patch_run_status(
            run,
            {
                "phase": Phase.STARTING.value,
                "attempt": attempt,
                "podName": pods.pod_name(meta["name"], attempt),
                "definition": pinned,
                "conditions": conditions(Phase.STARTING, "creating the pod of attempt 1"),
            },
        )
        await runs.set_status(self.pool, UUID(meta["uid"]), Phase.STARTING.value, attempt=attempt)
        await self._ensure_pod(run)

    async def _ensure_pod(self, run: Obj) -> None:
        status = run["status"]
        definition = TaskDefinitionSpec.model_validate(status["definition"])
        manifest = pods.build(run, definition, status["attempt"], self.settings)
        if await self.kube.create_pod(manifest):
            await self.kube.event(
                run,
                "PodCreated",
                f"attempt {status['attempt']}: created pod {manifest['metadata']['name']}",
            )

    async def _unknown_task(self, run: Obj) -> None:
        meta = run["metadata"]
        message = (
            f'TaskDefinition "{run["spec"]["task"]}" not found in namespace "{meta["namespace"]}"'
        )
        created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
        waited = (datetime.fromisoformat(now().replace("Z", "+00:00")) - created).total_seconds()
        if waited >= self.settings.unknown_task_grace_seconds:
            await self._fail(
                run, {"type": "UnknownTask", "reason": "UnknownTask", "message": message}
            )
            return
        if (run.get("status") or {}).get("phase") != Phase.PENDING.value:
            await self.kube.patch_run_status(
                run,
                {
                    "phase": Phase.PENDING.value,
                    "conditions": conditions(Phase.PENDING, message + "; waiting for it"),
                },
            )
        # Look again once the grace period is over (or earlier, on any change to the run).
        task = asyncio.create_task(
            self._recheck(
                meta["namespace"],
                meta["name"],
                self.settings.unknown_task_grace_seconds - waited + 0.5,
            )
        )
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _recheck(self, namespace: str, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._with_retries(namespace, name, None, self._advance)

    # -- pods --------------------------------------------------------------------------

    async def _observe_pod(self, run: Obj, event: str, pod: Obj) -> None:
        status = run.get("status") or {}
        owners = pod["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == run["metadata"]["uid"] for o in owners):
            return  # the pod of an earlier run of the same name
        if not status.get("phase") or Phase(status["phase"]).finished:
            return
        if pod["metadata"]["name"] != status.get("podName"):
            return  # an earlier attempt's pod
        pod_phase = (pod.get("status") or {}).get("phase")
        if pod_phase == "Succeeded":
            await self._succeed(run)
        elif pod_phase == "Failed":
            await self._fail_from_pod(run, pod)
        elif event == "DELETED":
            await self._fail(
                run,
                {
                    "type": "PodLost",
                    "reason": "PodDeleted",
                    "message": f"pod {pod['metadata']['name']} was deleted before it finished",
                },
            )
        elif pod_phase == "Running" and status["phase"] == Phase.STARTING.value:
            await self.kube.patch_run_status(
                run,
                {
                    "phase": Phase.RUNNING.value,
                    "startedAt": now(),
                    "conditions": conditions(Phase.RUNNING, f"running in pod {status['podName']}"),
                },
            )
            await runs.set_status(
                self.pool, UUID(run["metadata"]["uid"]), Phase.RUNNING.value, started=True
            )
            await self.kube.event(
                run, "Running", f"attempt {status['attempt']} is running in pod {status['podName']}"
            )

    async def _succeed(self, run: Obj) -> None:
        record = await runs.get(self.pool, UUID(run["metadata"]["uid"]))
        output = record.output if record else None
        status = run["status"]
        await self.kube.patch_run_status(
            run,
            {
                "phase": Phase.SUCCEEDED.value,
                "output": output,
                "finishedAt": now(),
                "startedAt": status.get("startedAt") or now(),
                "duration": _duration(record),
                "conditions": conditions(Phase.SUCCEEDED, "the task returned"),
            },
        )
        await runs.set_status(
            self.pool,
            UUID(run["metadata"]["uid"]),
            Phase.SUCCEEDED.value,
            started=True,
            finished=True,
        )
        await self.kube.event(run, "Succeeded", f"attempt {status['attempt']} succeeded")

    async def _fail_from_pod(self, run: Obj, pod: Obj) -> None:
        record = await runs.get(self.pool, UUID(run["metadata"]["uid"]))
        error = record.error if record and record.error else _pod_error(pod)
        await self._fail(run, error)

    async def _fail(self, run: Obj, error: Obj) -> None:
        run_id = UUID(run["metadata"]["uid"])
        record = await runs.get(self.pool, run_id)
        await self.kube.patch_run_status(
            run,
            {
                "phase": Phase.FAILED.value,
                "error": error,
                "finishedAt": now(),
                "duration": _duration(record),
                "conditions": conditions(Phase.FAILED, error["message"]),
            },
        )
        if record is not None:
            await runs.set_status(self.pool, run_id, Phase.FAILED.value, finished=True)
        await self.kube.event(
            run,
            "Failed",
            f"{error.get('reason') or error['type']}: {error['message']}",
            warning=True,
        )
