"""Reconcile one run: gather what is observed, ``decide``, apply the plan idempotently.

The run record in PostgreSQL is the truth of a run's lifecycle; a transition changes it in
one transaction guarded by its version (so replicas never both apply one), and everything
else follows from it after the commit: the pod is created or deleted, Events are posted
(best-effort), and the TaskRun status is patched to match the record. A crash between any
two of these writes leaves something the next reconcile (an event, a timer or the periodic
resync) finds and finishes. Pods are named ``<run>-<n>`` and pod ``n``'s record is
committed before the pod is created, so no attempt ever gets two pods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from durapod import logs
from durapod.durations import parse_duration
from durapod.operator import observe, pods, projection, traces
from durapod.operator.decide import Child, Observed, Plan, admission, decide, plans
from durapod.operator.decide.plans import ADMIT_POD
from durapod.operator.kube import Conflict, Kube, PodRejected, QuotaExceeded
from durapod.operator.settings import Settings
from durapod.resources.models import DEFAULT_KEY_TTL, Phase, TaskDefinitionSpec, TaskRunSpec
from durapod.store import Pool, idempotency, queues, runs
from durapod.store import pods as pod_records
from durapod.timestamps import parse_time, utcnow

log = logging.getLogger("durapod.operator")
Obj = dict[str, Any]
#: Transitions one reconcile applies in a row before it lets other keys go first.
MAX_STEPS = 12
#: How long a run whose pod a ResourceQuota refused waits before it tries again, unless a
#: pod in its namespace ends first.
QUOTA_RETRY = timedelta(seconds=5)
#: Pauses between the tries of an Event post (None: the last try).
EVENT_RETRIES = (0.2, 1.0, None)
#: Pods whose last seen state is kept until their run has acted on it.
MAX_LAST_PODS = 10_000


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        kube: Kube,
        add: Callable[[tuple[str, str, str]], None],
        add_after: Callable[[tuple[str, str, str], float], None],
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.kube = kube
        self._add, self._add_after = add, add_after
        #: The last state seen of each pod, by (namespace, name), until its run judged it.
        self._last_pods: dict[tuple[str, str], Obj] = {}
        #: Runs whose pod a ResourceQuota refused, by namespace: retried when a pod ends.
        self._blocked: dict[str, set[str]] = {}
        #: Blocked runs to try again at once: a pod ended since they were refused.
        self._unblocked: set[tuple[str, str]] = set()

    # -- entry points (from events) ---------------------------------------------------

    def pod_seen(self, event: str, pod: Obj) -> None:
        meta = pod["metadata"]
        run_name = pods.run_of(pod)
        if not run_name:
            return
        # Its last state: a pod gone before it is read is judged from it (why it went).
        key = (meta["namespace"], meta["name"])
        self._last_pods.pop(key, None)
        self._last_pods[key] = pod
        while len(self._last_pods) > MAX_LAST_PODS:  # only recent pods can still matter
            del self._last_pods[next(iter(self._last_pods))]
        phase = (pod.get("status") or {}).get("phase")
        if event == "DELETED" or phase in ("Succeeded", "Failed"):
            for name in sorted(self._blocked.pop(meta["namespace"], set())):
                self._unblocked.add((meta["namespace"], name))  # a ResourceQuota may fit it now
                self._add(("run", meta["namespace"], name))
        self._add(("run", meta["namespace"], run_name))

    # -- a run ------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> None:
        with logs.bind(namespace=namespace, run=name):
            for _ in range(MAX_STEPS):
                observed, run = await self._gather(namespace, name)
                if observed is None:
                    return
                with logs.bind(**_log_fields(observed)):
                    plan = decide(observed)
                    try:
                        moved = await self._apply(observed, run, plan)
                    except Conflict:
                        continue  # the TaskRun changed under the status write: look again
                if not moved:
                    return
        self._add(("run", namespace, name))  # a long chain of steps: go on later

    async def _gather(self, namespace: str, name: str) -> tuple[Observed | None, Obj]:
        run = await self.kube.get_taskrun(namespace, name)
        if run is None:
            freed = await runs.remove(self.pool, namespace, name, self._none_holds(namespace, name))
            for queue in freed:
                self._add(("queue", *queue))
            return None, {}
        meta = run["metadata"]
        spec = TaskRunSpec.model_validate(run["spec"])
        run_id = UUID(meta["uid"])
        record = await runs.get(self.pool, run_id)
        if record is None:
            root = traces.root(run)  # its trigger's, or a new one (a TaskRun applied as is)
            record, freed = await runs.ensure(
                self.pool,
                run_id=run_id,
                namespace=namespace,
                name=name,
                task=spec.task,
                payload=spec.payload,
                tags=spec.tags,
                gone=self._none_holds(namespace, name),
                traceparent=root.traceparent,
            )
            traces.settle(root, record)
            for queue in freed:
                self._add(("queue", *queue))
        if record is None or record.removed_at is not None:
            return None, run  # the TaskRun read was stale: its uid is gone (uids never return)
        now = utcnow()
        found: Obj = {}
        phase = Phase(record.phase)
        if phase == Phase.PENDING:
            found.update(await self._definition(run, spec, record, now))
        if record.pods:
            # Records, pod, and records again if the pod has ended: whether the pod existed
            # is known from before it was read (a pod created since is absent, not gone),
            # and what it reported from after (a runner reports before its pod ends).
            before = await pod_records.for_run(self.pool, run_id)
            current = [p for p in before if p.idx == record.pods]
            found["known"] = bool(current) and (
                current[0].in_cluster or current[0].started_at is not None
            )
            pod_name = pods.pod_name(name, record.pods)
            pod = await self.kube.get_pod(namespace, pod_name)
            if pod is not None and not _owned_by(pod, meta["uid"]):
                pod = None  # a pod of an earlier TaskRun of the same name
            found["pod"] = pod
            last = self._last_pods.get((namespace, pod_name)) if pod is None else None
            if last is not None and _owned_by(last, meta["uid"]) and _going(last):
                found.update(pod=last, pod_deleted=True)
            phase_now = ((found["pod"] or {}).get("status") or {}).get("phase")
            ended = pod is None or phase_now in ("Succeeded", "Failed")
            after = await pod_records.for_run(self.pool, run_id) if ended else before
            found["pod_records"] = tuple(after)
        if phase == Phase.WAITING and record.waiting_for:
            found["child"] = await self._child(namespace, record.waiting_for)
        observed = Observed(
            now=now,
            namespace=namespace,
            name=name,
            created=parse_time(meta["creationTimestamp"]),
            spec=spec,
            record=record,
            deleting=bool(meta.get("deletionTimestamp")),
            unblocked=(namespace, name) in self._unblocked,
            unknown_task_grace=timedelta(seconds=self.settings.unknown_task_grace_seconds),
            **found,
        )
        return observed, run

    def _none_holds(self, namespace: str, name: str) -> runs.Gone:
        """Asked before records of this name are removed: is no TaskRun theirs now?"""

        async def gone(removed: list[UUID]) -> bool:
            current = await self.kube.get_taskrun(namespace, name)
            return current is None or UUID(current["metadata"]["uid"]) not in removed

        return gone

    async def _definition(
        self, run: Obj, spec: TaskRunSpec, record: runs.Run, now: datetime
    ) -> Obj:
        """A Pending run's TaskDefinition and, once it may start, its idempotency key."""
        meta = run["metadata"]
        td = await self.kube.get_taskdefinition(meta["namespace"], spec.task)
        if td is None:
            return {"definition": None}
        try:
            definition: TaskDefinitionSpec | str = TaskDefinitionSpec.model_validate(td["spec"])
        except ValidationError as exc:
            return {"definition": str(exc)}
        found: Obj = {"definition": definition}
        start_at = admission.not_before(
            spec, record.created_at, parse_time(meta["creationTimestamp"])
        )
        if spec.idempotency_key and (start_at is None or start_at <= now):
            # Idempotent: a retried claim by the same run finds itself the holder.
            claim = await idempotency.claim(
                self.pool,
                idempotency.Request(
                    meta["namespace"],
                    spec.task,
                    spec.idempotency_key,
                    meta["name"],
                    parse_duration(spec.idempotency_key_ttl or DEFAULT_KEY_TTL),
                ),
            )
            found["key_holder"] = claim.run_name
        return found

    async def _child(self, namespace: str, name: str) -> Child:
        record = await runs.by_name(self.pool, namespace, name)
        if record is not None:
            phase = Phase(record.phase)
            if phase.finished:
                return Child(name, phase, record.output, record.error)
            return Child(name, None)
        if await self.kube.get_taskrun(namespace, name) is None:
            return Child(name, None, lost=True)
        return Child(name, None)  # not yet seen by an operator

    async def _apply(self, o: Observed, run: Obj, plan: Plan) -> bool:
        """Apply the plan; True when the record moved (decide again at once)."""
        record = o.record
        key = ("run", o.namespace, o.name)
        if plan.change is not None:
            moved = await runs.transition(self.pool, record, plan.change)
            if moved is None:
                return True  # another replica moved it first: decide again from there
            observe.transition(o, moved, plan.change)
            traces.committed(o, plan)
            record = moved
            self._unblocked.discard((o.namespace, o.name))
            if plan.change.pod_outcome is not None:  # judged: its last state is not needed
                self._last_pods.pop((o.namespace, o.pod_name), None)
        # What follows the commit in other keys goes first: a failure below (a Conflict on
        # the status, an API server error) retries this run, but must not lose those.
        self._follow_up(o, plan)
        if plan.mark_in_cluster:
            await pod_records.in_cluster(self.pool, record.id, record.pods)
        if plan.delete_pod:
            await self.kube.delete_pod(o.namespace, plan.delete_pod)
        for event in plan.events:
            await self._event(run, event.reason, event.message, event.warning)
        if plan.create_pod:
            record = await self._create_pod(run, o, record, plan.remaining_seconds)
        await self._project(run, record)
        if plan.delete_taskrun:
            await self.kube.delete_taskrun(o.namespace, o.name)
            self._add(key)  # gone now: its record is removed on the next look
        return plan.change is not None

    def _follow_up(self, o: Observed, plan: Plan) -> None:
        """The keys a committed plan wakes: its queue, its parent run, its own timer."""
        if plan.refill:
            self._add(("queue", o.namespace, plan.refill))
        if plan.notify_parent and o.spec.parent is not None:
            self._add(("run", o.namespace, o.spec.parent.name))
        if plan.wake_at is not None:
            self._add_after(("run", o.namespace, o.name), (plan.wake_at - utcnow()).total_seconds())

    async def _create_pod(
        self, run: Obj, o: Observed, record: runs.Run, remaining: float | None
    ) -> runs.Run:
        assert record.definition is not None and record.machine is not None
        definition = TaskDefinitionSpec.model_validate(record.definition)
        manifest = pods.build(
            run,
            definition,
            record.attempt,
            record.pods,
            record.machine,
            remaining,
            self.settings,
            traceparent=traces.pod_parent(record),
        )
        name = manifest["metadata"]["name"]
        try:
            created = await self.kube.create_pod(manifest)
        except QuotaExceeded as exc:
            # Back-pressure, not failure: the run waits, with its slot, for a pod to end.
            self._blocked.setdefault(o.namespace, set()).add(o.name)
            why = str(exc)
            values = {
                "phase": Phase.QUEUED.value,
                "admit_as": ADMIT_POD,
                "resume_at": utcnow() + QUOTA_RETRY,  # or sooner, once a pod ends
                "message": why,
            }
            moved = await runs.transition(self.pool, record, runs.Change(set=values))
            await self._event(run, "QuotaExceeded", f"pod {name} waits: {why}", warning=True)
            return moved or record
        except PodRejected as exc:
            # Permanent: the pod as built cannot exist (a definition the API server refuses).
            error = plans.run_error("PodRejected", f"the API server refused pod {name}: {exc}")
            failed = plans.finish(
                replace(o, record=record), Phase.FAILED, error=error, pod_outcome="Crashed"
            )
            assert failed.change is not None
            moved = await runs.transition(self.pool, record, failed.change)
            observe.transition(replace(o, record=record), moved, failed.change)
            if moved is not None:
                traces.committed(replace(o, record=record), failed)
            self._follow_up(o, failed)
            for event in failed.events:
                await self._event(run, event.reason, event.message, event.warning)
            return moved or record
        if not created:  # 409: ours (a retried create), or an earlier TaskRun's, terminating
            existing = await self.kube.get_pod(o.namespace, name)
            if existing is not None and not _owned_by(existing, run["metadata"]["uid"]):
                # Its end (a pod event of this name) brings us back; a timer in case not.
                self._add_after(("run", o.namespace, o.name), QUOTA_RETRY.total_seconds())
                return record
        await pod_records.in_cluster(self.pool, record.id, record.pods)
        if created:
            await self._event(
                run,
                "PodCreated",
                f"attempt {record.attempt}: created pod {name} ({record.machine})",
            )
        return record

    async def _project(self, run: Obj, record: runs.Run) -> None:
        """Make the TaskRun status match the record (only what differs; guarded by RV)."""
        patch = projection.patch(run.get("status"), record)
        if patch:
            await self.kube.patch_run_status(run, patch)

    async def _event(self, run: Obj, reason: str, message: str, warning: bool = False) -> None:
        """Events are best-effort: a failed post is tried twice more, then given up on;
        it never aborts a transition."""
        log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, message)
        for pause in EVENT_RETRIES:
            try:
                await self.kube.event(run, reason, message, warning)
                return
            except Exception as exc:
                if pause is None:
                    log.warning("event %s on %s: %s", reason, run["metadata"]["name"], exc)
                    return
            await asyncio.sleep(pause)

    # -- queues -----------------------------------------------------------------------

    async def refill(self, namespace: str, queue: str) -> None:
        """Hand free slots to waiting runs; each admitted run then starts its pod."""
        for _, name in await queues.admit(self.pool, namespace, queue):
            self._add(("run", namespace, name))

    # -- checkpoints ------------------------------------------------------------------

    async def show_checkpoint(self, run_id: UUID, seq: int, step: str) -> float | None:
        """Show the latest checkpoint in ``status.lastCheckpoint``, from one replica at most
        once per interval; the seconds after which to try again, or None when done."""
        interval = timedelta(seconds=self.settings.checkpoint_status_interval)
        claimed = await runs.claim_checkpoint_show(self.pool, run_id, seq, step, interval)
        if claimed is None:
            shown = await runs.shown_seq(self.pool, run_id)
            if shown is None or shown >= seq:
                return None  # shown already (or the run is gone)
            return interval.total_seconds()  # another replica showed one just now
        namespace, name, at = claimed
        last = projection.last_checkpoint(step, at).model_dump(by_alias=True)
        await self.kube.merge_status("taskruns", namespace, name, {"lastCheckpoint": last})
        return None


def _log_fields(o: Observed) -> Obj:
    """What the records of a run's reconcile carry (see :func:`durapod.logs.bind`); the
    trace is the record's (its trigger's, or the one begun for a TaskRun applied as is)."""
    return {
        "run_id": str(o.record.id),
        "task": o.record.task,
        "attempt": o.record.attempt or None,
        "trace_id": logs.trace_id(o.record.traceparent),
    }


def _owned_by(pod: Obj, uid: str) -> bool:
    owners = pod["metadata"].get("ownerReferences")
    return owners is None or any(o.get("uid") == uid for o in owners)


def _going(pod: Obj) -> bool:
    """A last state that says why the pod went (ended, deleted, disrupted); a pod last
    seen just created and absent now was not created yet, as far as this read goes."""
    status = pod.get("status") or {}
    return bool(
        status.get("phase") in ("Succeeded", "Failed")
        or pod["metadata"].get("deletionTimestamp")
        or any(c.get("type") == "DisruptionTarget" for c in status.get("conditions") or [])
    )
