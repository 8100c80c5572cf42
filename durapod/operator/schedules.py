"""TaskSchedules: cron (five fields, or six with seconds first) in a timezone.

Each tick's run is named after the tick (``<schedule>-<unix time>``), so however many
operator replicas see the tick, the API server admits one run for it. After downtime the
most recent missed ticks run, up to ``catchUp``. ``concurrencyPolicy`` Forbid skips a tick
while an earlier run of the schedule is unfinished; Replace cancels it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from durapod.operator.background import spawn
from durapod.operator.kube import Kube, now
from durapod.resources.models import ConcurrencyPolicy, Phase

log = logging.getLogger("durapod.operator.schedules")
Obj = dict[str, Any]
LABEL_SCHEDULE = "durapod.io/schedule"
MAX_LOOKBACK = 1000  # ticks examined after downtime, whatever catchUp says


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._timers: dict[str, asyncio.Task[None]] = {}

    async def changed(self, schedule: Obj) -> None:
        meta, spec = schedule["metadata"], schedule["spec"]
        key = f"{meta['namespace']}/{meta['name']}"
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        if (why := problem(spec)) is not None:
            await self.kube.merge_status(
                "taskschedules",
                meta["namespace"],
                meta["name"],
                {"error": why, "nextScheduleTime": None},
            )
            return
        status = schedule.get("status") or {}
        zone = spec.get("timezone") or "UTC"
        last = _parse(status.get("lastScheduleTime") or meta["creationTimestamp"])
        current = datetime.now(UTC)
        due = [] if spec.get("suspend") else ticks_between(spec["cron"], zone, last, current)
        catch_up = max(int(spec.get("catchUp", 1)), 1)
        for tick in due[-catch_up:]:
            await self._fire(schedule, tick)
        upcoming = next_tick(spec["cron"], zone, max(current, due[-1] if due else last))
        patch: Obj = {
            "nextScheduleTime": None if spec.get("suspend") else _iso(upcoming),
            "error": None,
        }
        if due:
            patch["lastScheduleTime"] = _iso(due[-1])
        await self.kube.merge_status("taskschedules", meta["namespace"], meta["name"], patch)
        if not spec.get("suspend"):
            self._timers[key] = spawn(self._later(meta, upcoming), f"schedule {key}")

    def forget(self, schedule: Obj) -> None:
        meta = schedule["metadata"]
        if (timer := self._timers.pop(f"{meta['namespace']}/{meta['name']}", None)) is not None:
            timer.cancel()

    async def _later(self, meta: Obj, when: datetime) -> None:
        await asyncio.sleep(max((when - datetime.now(UTC)).total_seconds(), 0.0))
        self._timers.pop(f"{meta['namespace']}/{meta['name']}", None)  # not to cancel itself
        schedule = await self.kube.get_taskschedule(meta["namespace"], meta["name"])
        if schedule is not None:
            await self.changed(schedule)

    async def _fire(self, schedule: Obj, tick: datetime) -> None:
        meta, spec = schedule["metadata"], schedule["spec"]
        policy = spec.get("concurrencyPolicy", ConcurrencyPolicy.ALLOW.value)
        if policy != ConcurrencyPolicy.ALLOW.value:
            active = [
                r
                for r in await self.kube.list_taskruns(
                    meta["namespace"], {LABEL_SCHEDULE: meta["name"]}
                )
                if not Phase((r.get("status") or {}).get("phase") or "Pending").finished
            ]
            if active and policy == ConcurrencyPolicy.FORBID.value:
                log.info(
                    "schedule %s: tick %s skipped, %s still running",
                    meta["name"],
                    _iso(tick),
                    active[0]["metadata"]["name"],
                )
                return
            for run in active:
                await self.kube.cancel_taskrun(meta["namespace"], run["metadata"]["name"])
        name = f"{meta['name'][:40]}-{int(tick.timestamp())}"
        _, created = await self.kube.create_taskrun(
            meta["namespace"],
            name,
            {
                "task": spec["task"],
                "payload": spec.get("payload") or {},
                "idempotencyKey": f"schedule:{meta['name']}:{int(tick.timestamp())}",
            },
            labels={LABEL_SCHEDULE: meta["name"]},
            owner=schedule,
        )
        if created:
            await self.kube.merge_status(
                "taskschedules",
                meta["namespace"],
                meta["name"],
                {"lastRun": name, "lastScheduleTime": _iso(tick)},
            )
            log.info(
                "schedule %s: started %s for tick %s at %s", meta["name"], name, _iso(tick), now()
            )
