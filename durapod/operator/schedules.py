"""TaskSchedules: cron (five fields, or six with seconds first) in a timezone.

Each tick's run is named after the tick (``<schedule>-<unix time>``), so however many
operator replicas see the tick, the API server admits one run for it. After downtime the
most recent missed ticks run, up to ``catchUp``. ``concurrencyPolicy`` Forbid skips a tick
while an earlier run of the schedule is unfinished; Replace cancels it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from durapod import tracing
from durapod.operator.kube import Kube
from durapod.resources.models import ConcurrencyPolicy, Phase
from durapod.timestamps import format_time, parse_time

log = logging.getLogger("durapod.operator.schedules")
Obj = dict[str, Any]
LABEL_SCHEDULE = "durapod.io/schedule"
MAX_LOOKBACK = 1000  # ticks examined after downtime, whatever catchUp says


def ticks_between(cron: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    """The ticks in (after, until], oldest first (at most MAX_LOOKBACK of the newest)."""
    it = _cron(cron, zone, after)
    found: list[datetime] = []
    while (tick := it.get_next(datetime)) <= until:
        found.append(tick)
        if len(found) > MAX_LOOKBACK:
            found.pop(0)
    return found


def next_tick(cron: str, zone: str, after: datetime) -> datetime:
    tick: datetime = _cron(cron, zone, after).get_next(datetime)
    return tick


def _cron(cron: str, zone: str, start: datetime) -> Any:
    local = start.astimezone(ZoneInfo(zone))
    return croniter(cron, local, second_at_beginning=len(cron.split()) == 6)


def problem(spec: Obj) -> str | None:
    """Why a schedule cannot work (bad cron or timezone), or None."""
    try:
        ZoneInfo(spec.get("timezone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone {spec.get('timezone')!r}"
    if not croniter.is_valid(spec["cron"], second_at_beginning=len(spec["cron"].split()) == 6):
        return f"invalid cron expression {spec['cron']!r}"
    return None


class Scheduler:
    """Fires a schedule's due ticks; its work queue key is handled again at the next tick
    (and on every resync), so a failed tick is retried and no timer is ever lost."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def reconcile(self, namespace: str, name: str) -> datetime | None:
        """Fire what is due; when to look again (None: never, until the schedule changes)."""
        schedule = await self.kube.get_taskschedule(namespace, name)
        if schedule is None:
            return None
        meta, spec = schedule["metadata"], schedule["spec"]
        if (why := problem(spec)) is not None:
            await self.kube.merge_status(
                "taskschedules", namespace, name, {"error": why, "nextScheduleTime": None}
            )
            return None
        status = schedule.get("status") or {}
        zone = spec.get("timezone") or "UTC"
        last = parse_time(status.get("lastScheduleTime") or meta["creationTimestamp"])
        current = datetime.now(UTC)
        due = [] if spec.get("suspend") else ticks_between(spec["cron"], zone, last, current)
        catch_up = max(int(spec.get("catchUp", 1)), 1)
        for tick in due[-catch_up:]:
            await self._fire(schedule, tick)
        upcoming = next_tick(spec["cron"], zone, max(current, due[-1] if due else last))
        patch: Obj = {
            "nextScheduleTime": None if spec.get("suspend") else format_time(upcoming),
            "error": None,
        }
        if due:
            patch["lastScheduleTime"] = format_time(due[-1])
        await self.kube.merge_status("taskschedules", namespace, name, patch)
        return None if spec.get("suspend") else upcoming

    async def _fire(self, schedule: Obj, tick: datetime) -> None:
        meta, spec = schedule["metadata"], schedule["spec"]
        policy = spec.get("concurrencyPolicy", ConcurrencyPolicy.ALLOW.value)
        name = f"{meta['name'][:40]}-{int(tick.timestamp())}"
        if policy != ConcurrencyPolicy.ALLOW.value:
            active = [
                r
                for r in await self.kube.list_taskruns(
                    meta["namespace"], {LABEL_SCHEDULE: meta["name"]}
                )
                if not Phase((r.get("status") or {}).get("phase") or "Pending").finished
                # A retried tick finds its own run: never a reason to skip or cancel.
                and r["metadata"]["name"] != name
            ]
            if active and policy == ConcurrencyPolicy.FORBID.value:
                log.info(
                    "schedule %s: tick %s skipped, %s still running",
                    meta["name"],
                    format_time(tick),
                    active[0]["metadata"]["name"],
                )
                return
            for run in active:
                await self.kube.cancel_taskrun(meta["namespace"], run["metadata"]["name"])
        # The tick's run starts its own trace (a retried tick's finds the run made before).
        with tracing.root("schedule", meta["namespace"], spec["task"]) as root:
            run, created = await self.kube.create_taskrun(
                meta["namespace"],
                name,
                {
                    "task": spec["task"],
                    "payload": spec.get("payload") or {},
                    "idempotencyKey": f"schedule:{meta['name']}:{int(tick.timestamp())}",
                },
                labels={LABEL_SCHEDULE: meta["name"]},
                owner=schedule,
                annotations=root.annotations,
            )
            root.keep(run, created)
        if created:
            await self.kube.merge_status(
                "taskschedules",
                meta["namespace"],
                meta["name"],
                {"lastRun": name, "lastScheduleTime": format_time(tick)},
            )
            log.info("schedule %s: started %s for tick %s", meta["name"], name, format_time(tick))
