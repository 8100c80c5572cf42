"""The Prometheus registry of a durapod process (the operator's, the API's): its own, so
tests and imports never share or double series, with the process, platform and GC
collectors a scrape expects."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
)

# No ``_created`` series beside each counter and histogram: they would double what is
# scraped, and no alert or panel reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


def registry() -> CollectorRegistry:
    made = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        made.register(collector)
    return made
