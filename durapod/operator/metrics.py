"""The operator's Prometheus metrics, served on ``DURAPOD_OPERATOR_METRICS_ADDR``.

Counters and histograms of runs are counted by the replica that commits a transition
(``observe``), so they add up over replicas. The gauges of queues and unfinished runs are
read from the database by a loop every ``REFRESH_SECONDS`` and reported by every replica
alike (query them with ``max by``): a collector yields them from the last snapshot, so a
queue or key that is gone stops being reported instead of keeping its last value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from durapod import promregistry, store
from durapod.store import stats

log = logging.getLogger("durapod.operator.metrics")
#: Where metrics are served unless ``DURAPOD_OPERATOR_METRICS_ADDR`` says otherwise.
DEFAULT_ADDRESS = "0.0.0.0:9090"
#: Values of ``DURAPOD_OPERATOR_METRICS_ADDR`` that serve no metrics.
OFF = ("", "off")
#: Seconds between two reads of the database's gauges.
REFRESH_SECONDS = 10.0
#: Concurrency keys reported per queue; the rest are summed as ``_other``.
TOP_KEYS = 10

#: Runs and pods last from under a second to days.
LONG = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
#: Trigger to start: a pod's start, or a wait for a slot.
START = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300, 600, 1800)
#: A reconcile is a few database transactions and API calls.
RECONCILE = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RUN = ("namespace", "task", "queue")

REGISTRY = promregistry.registry()

RUNS_CREATED = Counter(
    "durapod_runs_created",
    "Run records created (counted at their first transition).",
    ("namespace", "task"),
    registry=REGISTRY,
)
RUNS_FINISHED = Counter(
    "durapod_runs_finished",
    "Runs that reached a final phase.",
    (*RUN, "phase"),
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "durapod_run_duration_seconds",
    "Run duration: startedAt to finishedAt (created to finished when it never started).",
    (*RUN, "phase"),
    buckets=LONG,
    registry=REGISTRY,
)
RUN_START_LATENCY = Histogram(
    "durapod_run_start_latency_seconds",
    "From the trigger (the run's creation) to its first attempt running.",
    RUN,
    buckets=START,
    registry=REGISTRY,
)
ATTEMPT_DURATION = Histogram(
    "durapod_attempt_duration_seconds",
    "From a pod's start to its end, per ended pod.",
    (*RUN, "outcome"),
    buckets=LONG,
    registry=REGISTRY,
)
POD_ENDINGS = Counter(
    "durapod_pod_endings",
    "Pods judged ended, by outcome (Evicted, OOMKilled, TimedOut, TaskError...).",
    (*RUN, "outcome"),
    registry=REGISTRY,
)
RETRIES = Counter(
    "durapod_retries",
    "New attempts after a task error or an OOM kill.",
    RUN,
    registry=REGISTRY,
)
RESUMES = Counter(
    "durapod_resumes",
    "New pods after a disruption (eviction, node loss), in the same attempt.",
    RUN,
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "durapod_reconcile_duration_seconds",
    "Time to handle one key of the work queue.",
    ("kind",),
    buckets=RECONCILE,
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "durapod_reconcile_errors",
    "Reconciles that raised (each is retried with backoff).",
    ("kind",),
    registry=REGISTRY,
)
RESYNCS = Counter("durapod_resyncs", "Periodic resyncs started.", registry=REGISTRY)
WORKQUEUE_DEPTH = Gauge(
    "durapod_workqueue_depth", "Keys waiting in the work queue.", registry=REGISTRY
)


class DatabaseGauges(Collector):
    """The gauges read from the database, as of the last snapshot."""

    def __init__(self) -> None:
        self.snapshot: stats.Snapshot | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.snapshot)  # one read: the loop replaces it whole

    @staticmethod
    def _families(snapshot: stats.Snapshot | None) -> list[Metric]:
        queue, key = ("namespace", "queue"), ("namespace", "queue", "key")
        waiting = GaugeMetricFamily(
            "durapod_queue_waiting", "Runs waiting for a slot of their queue.", labels=queue
        )
        running = GaugeMetricFamily(
            "durapod_queue_running", "Runs holding a slot of their queue.", labels=queue
        )
        slots = GaugeMetricFamily(
            "durapod_queue_slots", "The concurrency limit of a limited queue.", labels=queue
        )
        active = GaugeMetricFamily(
            "durapod_runs_active",
            "Unfinished runs by phase.",
            labels=("namespace", "task", "phase"),
        )
        key_running = GaugeMetricFamily(
            "durapod_concurrency_key_running",
            f"Runs holding a slot, per concurrency key (top {TOP_KEYS} per queue, "
            f"the rest as key={stats.OTHER}).",
            labels=key,
        )
        key_waiting = GaugeMetricFamily(
            "durapod_concurrency_key_waiting",
            f"Runs waiting for a slot, per concurrency key (top {TOP_KEYS} per queue, "
            f"the rest as key={stats.OTHER}).",
            labels=key,
        )
        if snapshot is not None:
            for q in snapshot.queues:
                waiting.add_metric([q.namespace, q.queue], q.waiting)
                running.add_metric([q.namespace, q.queue], q.running)
                if q.slots is not None:
                    slots.add_metric([q.namespace, q.queue], q.slots)
            for (namespace, task, phase), n in sorted(snapshot.active.items()):
                active.add_metric([namespace, task, phase], n)
            for k in snapshot.keys:
                key_running.add_metric([k.namespace, k.queue, k.key], k.running)
                key_waiting.add_metric([k.namespace, k.queue, k.key], k.waiting)
        return [waiting, running, slots, active, key_running, key_waiting]


DATABASE = DatabaseGauges()
REGISTRY.register(DATABASE)


def parse_address(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[::]:9090`` for IPv6) as (host, port); None for ``""``/``off``.

    Raises ValueError for anything else.
    """
    text = text.strip()
    if text.lower() in OFF:
        return None
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not host:port: {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(address: str) -> tuple[WSGIServer, Thread] | None:
    """Serve ``/metrics`` on ``address`` in a thread; None (and a logged error) when it
    cannot be: metrics must never stop the operator from doing its work."""
    try:
        where = parse_address(address)
        if where is None:
            return None
        served = start_http_server(where[1], addr=where[0], registry=REGISTRY)
    except (ValueError, OSError) as exc:
        log.error("metrics are not served on %r: %s", address, exc)
        return None
    log.info("metrics served on http://%s:%d/metrics", *where)
    return served


async def refresh_forever(pool: store.Pool, ready: asyncio.Event) -> None:
    """Read the gauges from the database once it is migrated, then every few seconds.
    A failed read keeps the last snapshot (a blip does not blank the dashboards)."""
    await ready.wait()
    while True:
        try:
            DATABASE.snapshot = await stats.snapshot(pool, TOP_KEYS)
        except Exception as exc:
            log.warning("metrics: the database's gauges could not be read: %s", exc)
        await asyncio.sleep(REFRESH_SECONDS)
