"""durapod's Grafana dashboard, built in code with grafana-foundation-sdk.

``make chart`` writes it into the chart (``files/dashboard.json``, through
``durapod.chart``), which ships it as a ConfigMap for Grafana's dashboard sidecar. Every
query follows the metric contract: counters and histograms are summed over replicas
(each transition is counted once, by the replica that committed it), while the gauges read
from the database are reported alike by every operator replica, hence ``max by``. The
Prometheus data source, namespaces and queues are variables; the scrape jobs of the ``up``
panel are found from the metrics only the operator and the API serve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

UID = "durapod"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Label filters of the run metrics (the API's have no queue label).
RUNS = 'namespace=~"$namespace", queue=~"$queue"'
TASKS = 'namespace=~"$namespace"'
#: Grafana's rate window: at least four scrapes, whatever the step.
WINDOW = "$__rate_interval"
FINISHED = "durapod_runs_finished_total"
FAILED = 'phase=~"Failed|TimedOut"'
REQUESTS = "durapod_http_request_duration_seconds"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def rate(metric: str, labels: str, by: str) -> str:
    selector = f"{metric}{{{labels}}}" if labels else metric
    return f"sum by ({by}) (rate({selector}[{WINDOW}]))"


def quantiles(metric: str, labels: str, *levels: float, by: str = "") -> list[Query]:
    """``histogram_quantile`` of a histogram's buckets summed over replicas and series."""
    group = f"{by}, le" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [
        Query(
            f"histogram_quantile({q}, {rate(metric + '_bucket', labels, group)})",
            f"{prefix}p{round(q * 100)}",
        )
        for q in levels
    ]


def total(metric: str, labels: str) -> str:
    """How many over the dashboard's time range; none counted yet is 0, not "No data"."""
    return f"sum(increase({metric}{{{labels}}}[$__range])) or vector(0)"


def _targets(queries: Sequence[Query]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(ord("A") + i))
        for i, q in enumerate(queries)
    ]


def graph(
    title: str, description: str, unit: str, *queries: Query, bars: bool = False
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(12)
        .height(8)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
        .targets(_targets(queries))  # type: ignore[arg-type]
    )
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    return panel


def stats(title: str, description: str, unit: str, *queries: Query) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(12)
        .height(8)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .targets(_targets(queries))  # type: ignore[arg-type]
    )


def _variable(name: str, label: str, query: str, hide: bool = False) -> builders.QueryVariable:
    variable = (
        builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
    )
    if hide:
        return variable.hide(models.VariableHide.HIDE_VARIABLE)
    return variable.all_value(".*")


def variables() -> list[builders.QueryVariable]:
    return [
        _variable("namespace", "Namespace", "label_values(durapod_runs_created_total, namespace)"),
        _variable(
            "queue", "Queue", 'label_values(durapod_queue_running{namespace=~"$namespace"}, queue)'
        ),
        _variable(
            "operator_job", "Operator job", "label_values(durapod_workqueue_depth, job)", True
        ),
        _variable("api_job", "API job", f"label_values({REQUESTS}_count, job)", True),
    ]


Panels = list[timeseries.Panel | stat.Panel]


def throughput() -> Panels:
    share = (
        f"({total(FINISHED, f'{RUNS}, {FAILED}')}) / sum(increase({FINISHED}{{{RUNS}}}[$__range]))"
    )
    percent = [models.DynamicConfigValue(id_val="unit", value="percentunit")]
    return [
        graph(
            "Runs finished by phase",
            "Runs reaching a final phase, per second.",
            "ops",
            Query(rate(FINISHED, RUNS, "phase"), "{{phase}}"),
        ),
        graph(
            "Runs created and triggered",
            "Run records created (by any trigger), and runs created through the API by source.",
            "ops",
            Query(rate("durapod_runs_created_total", TASKS, "task"), "created {{task}}"),
            Query(rate("durapod_triggers_total", TASKS, "source"), "API {{source}}"),
        ),
        stats(
            "Runs over the time range",
            "Runs finished, those that Failed or TimedOut, and their share.",
            "short",
            Query(total(FINISHED, RUNS), "finished"),
            Query(total(FINISHED, f"{RUNS}, {FAILED}"), "failed"),
            Query(share, "failed share"),
        ).override_by_query("C", percent),
        graph(
            "Unfinished runs by phase",
            "Live runs not yet in a final phase (read from the database).",
            "short",
            Query(
                "sum by (phase) (max by (namespace, task, phase) "
                f"(durapod_runs_active{{{TASKS}}}))",
                "{{phase}}",
            ),
        ),
    ]


def latency() -> Panels:
    return [
        graph(
            "Trigger to start",
            "From a run's creation to its first attempt running (queue wait included).",
            "s",
            *quantiles("durapod_run_start_latency_seconds", RUNS, 0.5, 0.95),
        ),
        graph(
            "Run duration",
            "From a run's start to its final phase.",
            "s",
            *quantiles("durapod_run_duration_seconds", RUNS, 0.5, 0.95),
        ),
        graph(
            "Step duration",
            "Step durations measured by the runner.",
            "s",
            *quantiles("durapod_step_duration_seconds", TASKS, 0.5, 0.95),
        ),
        graph(
            "Checkpoint writes",
            "The database write of a checkpoint, as the API times it.",
            "s",
            *quantiles("durapod_checkpoint_write_seconds", TASKS, 0.5, 0.99),
        ),
    ]


def queues() -> Panels:
    per_queue = "{{namespace}}/{{queue}}"
    return [
        graph(
            "Waiting per queue",
            "Runs waiting for a slot of their queue (the queue's depth).",
            "short",
            Query(f"max by (namespace, queue) (durapod_queue_waiting{{{RUNS}}})", per_queue),
        ),
        graph(
            "Running per queue, and slots",
            "Runs holding a slot, and the limit of limited queues.",
            "short",
            Query(f"max by (namespace, queue) (durapod_queue_running{{{RUNS}}})", per_queue),
            Query(
                f"max by (namespace, queue) (durapod_queue_slots{{{RUNS}}})", f"{per_queue} slots"
            ),
        ),
        graph(
            "Concurrency keys",
            "Runs holding and waiting for a slot per key (a queue's top keys, the rest as _other).",
            "short",
            Query(
                f"max by (namespace, queue, key) (durapod_concurrency_key_running{{{RUNS}}})",
                f"{per_queue} {{{{key}}}} running",
            ),
            Query(
                f"max by (namespace, queue, key) (durapod_concurrency_key_waiting{{{RUNS}}})",
                f"{per_queue} {{{{key}}}} waiting",
            ),
        ),
        graph(
            "Attempt duration by outcome",
            "From a pod's start to its end, by how it ended.",
            "s",
            *quantiles("durapod_attempt_duration_seconds", RUNS, 0.95, by="outcome"),
        ),
    ]


def disruptions() -> Panels:
    endings = "durapod_pod_endings_total"
    outcomes = (("Evicted", "evictions"), ("OOMKilled", "OOM kills"), ("TimedOut", "timeouts"))
    return [
        graph(
            "Pod endings by outcome",
            "Pods ended, by outcome: evictions, OOM kills, timeouts, task errors...",
            "short",
            Query(f"sum by (outcome) (increase({endings}{{{RUNS}}}[{WINDOW}]))", "{{outcome}}"),
            bars=True,
        ),
        stats(
            "Resumes, retries, evictions, OOM kills, timeouts",
            "Over the time range. A resume is a new pod in the same attempt (after an"
            " eviction); a retry is a new attempt (after a task error or an OOM kill).",
            "short",
            Query(total("durapod_resumes_total", RUNS), "resumes"),
            Query(total("durapod_retries_total", RUNS), "retries"),
            *(Query(total(endings, f'{RUNS}, outcome="{o}"'), label) for o, label in outcomes),
        ),
    ]


def operator() -> Panels:
    reconciles = rate("durapod_reconcile_duration_seconds_count", "", "kind")
    return [
        graph(
            "Reconciles and errors",
            "Work-queue keys handled per second, and those that raised (retried).",
            "ops",
            Query(reconciles, "{{kind}}"),
            # No error yet: a flat 0 per kind, not "No data".
            Query(
                f"{rate('durapod_reconcile_errors_total', '', 'kind')} or 0 * {reconciles}",
                "{{kind}} errors",
            ),
        ),
        graph(
            "Reconcile latency",
            "Time to handle one key of the work queue.",
            "s",
            *quantiles("durapod_reconcile_duration_seconds", "", 0.99, by="kind"),
        ),
        graph(
            "Work queue depth and resyncs",
            "Keys waiting in each replica's work queue; periodic resyncs per second.",
            "short",
            Query('durapod_workqueue_depth{job=~"$operator_job"}', "{{instance}} depth"),
            Query(f"sum(rate(durapod_resyncs_total[{WINDOW}]))", "resyncs/s"),
        ),
        graph(
            "Targets up",
            "The operator's and the API's replicas scraped successfully.",
            "short",
            Query('sum by (job) (up{job=~"$operator_job|$api_job"})', "{{job}}"),
        ),
    ]


def api() -> Panels:
    return [
        graph(
            "Requests by route",
            "API requests per second by route template.",
            "reqps",
            Query(rate(f"{REQUESTS}_count", "", "route"), "{{route}}"),
        ),
        graph(
            "Requests by status",
            "API requests per second by status code.",
            "reqps",
            Query(rate(f"{REQUESTS}_count", "", "status"), "{{status}}"),
        ),
        graph(
            "Request latency by route",
            "The 95th percentile of API request durations by route template.",
            "s",
            *quantiles(REQUESTS, "", 0.95, by="route"),
        ),
        graph(
            "Checkpoint size",
            "Size of the checkpoints and states written.",
            "bytes",
            *quantiles("durapod_checkpoint_bytes", TASKS, 0.5, 0.95),
        ),
    ]


def rows() -> list[tuple[str, Panels]]:
    """Each row's title and panels (new builders each time: building one mutates it)."""
    return [
        ("Throughput and outcomes", throughput()),
        ("Latency", latency()),
        ("Queues", queues()),
        ("Disruptions", disruptions()),
        ("Operator", operator()),
        ("API", api()),
    ]


def build() -> models.Dashboard:
    board = (
        builders.Dashboard("durapod")
        .uid(UID)
        .description("Runs, queues, latency, disruptions and the health of durapod.")
        .tags(["durapod"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            builders.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    for variable in variables():
        board = board.with_variable(variable)
    for title, panels in rows():
        board = board.with_row(builders.Row(title))
        for panel in panels:
            board = board.with_panel(panel)
    model = board.build()
    for number, built in enumerate(model.panels or [], 1):
        built.id_val = number  # Grafana wants them unique; the builders leave them 0
    return model


def json_text() -> str:
    """The dashboard as Grafana imports it, stable from one build to the next."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
