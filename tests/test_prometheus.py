"""A real Prometheus (Debian's ``/usr/bin/prometheus``, on loopback) scrapes ``durapod dev``
while it runs a few runs: one succeeds (triggered over HTTP), one is evicted and resumes, one
is OOM-killed and retried on a larger machine, one fails, and two share a queue with one
slot (one holds it, one waits). PromQL then counts exactly those; every query of the
dashboard the chart ships parses and returns data; every alert of the chart parses, and
Prometheus evaluates the rules without an error while neither down alert fires."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from durapod.dev.postgres import free_port
from tests.chart_helpers import NAMESPACE
from tests.helpers import DevProcess, definition, running_dev, taskrun, wait_for
from tests.observability import (
    API_JOB,
    OPERATOR_JOB,
    alerts,
    as_grafana_sends,
    label_values,
    panel_queries,
    variable_queries,
    write_rules,
)

FAST_RETRY = {"minDelay": "100ms", "maxDelay": "1s", "jitter": False}
#: Pending runs of the one-slot queue sleep this long: still there when the test looks.
HOLD_SECONDS = 600


class Prometheus:
    """``/usr/bin/prometheus`` scraping ``targets`` (job name to ``/metrics`` URL) every
    second, as a ServiceMonitor would: the target labelled with the release's namespace,
    the scraped labels (a run's ``namespace``) kept (``honor_labels``). It loads ``rules``."""

    def __init__(self, home: Path, targets: dict[str, str], rules: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": urlsplit(url).path,
                    "honor_labels": True,
                    "static_configs": [
                        {"targets": [urlsplit(url).netloc], "labels": {"namespace": NAMESPACE}}
                    ],
                }
                for job, url in targets.items()
            ],
        }
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = home / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "/usr/bin/prometheus",
                    f"--config.file={home / 'prometheus.yml'}",
                    f"--storage.tsdb.path={home / 'data'}",
                    f"--web.listen-address={urlsplit(self.url).netloc}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.started = time.monotonic()
        wait_for(self._ready, 60, "Prometheus to be ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def api(self, path: str, **form: str) -> Any:
        """An API call (a query is POSTed, as Grafana sends them): its ``data``."""
        url = f"{self.url}/api/v1/{path}"
        answer = (httpx.post(url, data=form, timeout=30) if form else httpx.get(url)).json()
        assert answer["status"] == "success", f"{form}: {answer}"
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def number(self, expr: str) -> float | None:
        """The single value of ``expr`` now (None while it has none)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    def window(self) -> str:
        """A rate window covering everything scraped so far."""
        return f"{math.ceil(time.monotonic() - self.started) + 5}s"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-prometheus-") as process:
        yield process


@pytest.fixture(scope="module")
def prometheus(dev: DevProcess) -> Iterator[Prometheus]:
    home = Path(tempfile.mkdtemp(prefix="durapod-prometheus-"))
    env = dev.env()
    targets = {
        OPERATOR_JOB: env["DURAPOD_OPERATOR_METRICS_URL"],
        API_JOB: env["DURAPOD_API_METRICS_URL"],
    }
    server = Prometheus(home, targets, write_rules(home))
    try:
        # Before any run: a series born between two scrapes shows no increase at its birth.
        wait_for(lambda: len(server.query("up == 1")) == 2, 30, "the first scrapes")
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def _pod_running(dev: DevProcess, pod: str) -> bool:
    found = dev.get(f"/api/v1/namespaces/default/pods/{pod}")
    return bool(found) and found["status"].get("phase") == "Running"


@pytest.fixture(scope="module")
def scenario(dev: DevProcess, prometheus: Prometheus) -> None:
    """The runs, each to its end (the two in the one-slot queue to Running and Queued)."""
    dev.apply(
        definition("nap", "tests.light_tasks:nap", retry=FAST_RETRY),
        definition(
            "hungry",
            "tests.tasks:hungry",
            machine="micro",
            retry={**FAST_RETRY, "onOOM": {"upgradeMachine": True}},
        ),
        definition("explode", "tests.tasks:failing", retry={"maxAttempts": 1}),
        definition(
            "held", "tests.light_tasks:nap", queue={"name": "narrow", "concurrencyLimit": 1}
        ),
    )
    triggered = dev.trigger("nap", {"n": 1})
    hold = {"pause": HOLD_SECONDS}
    dev.apply(
        taskrun("oom", "hungry", {"mib": 300}),
        taskrun("fail", "explode", {"kind": "error"}),
        taskrun("held-1", "held", hold, concurrencyKey="tenant-a"),
        taskrun("held-2", "held", hold, concurrencyKey="tenant-a"),
    )
    # The second run of `nap` after the first has been scraped: its histograms' series
    # then have two observations, so their rates (and quantiles) are more than 0.
    assert dev.wait_phase(triggered, "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    dev.apply(taskrun("evicted", "nap", {"pause": 3}))
    wait_for(lambda: _pod_running(dev, "evicted-1"), 60, "the pod of run evicted")
    eviction = httpx.post(
        f"{dev.kube_url}/api/v1/namespaces/default/pods/evicted-1/eviction",
        json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "evicted-1"}},
        timeout=30,
    )
    assert eviction.status_code == 201, eviction.text
    finished = {
        name: dev.wait_phase(name, "Succeeded", "Failed", timeout=120)["status"]
        for name in ("evicted", "oom", "fail")
    }
    assert finished["evicted"]["phase"] == "Succeeded" and finished["evicted"]["resumes"] == 1
    assert finished["oom"]["phase"] == "Succeeded" and finished["oom"]["attempt"] == 2
    assert finished["fail"]["phase"] == "Failed"
    waiting = {
        dev.wait_phase(n, "Running", "Queued")["status"]["phase"] for n in ("held-1", "held-2")
    }
    assert waiting == {"Running", "Queued"}


#: What PromQL must say once the scenario has been scraped.
EXPECTED = {
    f'up{{job="{OPERATOR_JOB}"}}': 1,
    f'up{{job="{API_JOB}"}}': 1,
    "sum(durapod_runs_created_total)": 6,
    'sum(durapod_triggers_total{source="http"})': 1,
    'sum(durapod_runs_finished_total{phase="Succeeded"})': 3,
    'sum(durapod_runs_finished_total{phase="Failed"})': 1,
    'sum(durapod_pod_endings_total{outcome="Evicted"})': 1,
    'sum(durapod_pod_endings_total{outcome="OOMKilled"})': 1,
    'sum(durapod_pod_endings_total{outcome="TaskError"})': 1,
    'sum(durapod_pod_endings_total{outcome="Succeeded"})': 3,
    "sum(durapod_resumes_total)": 1,
    "sum(durapod_retries_total)": 1,
    # nap twice, hungry, explode and the run holding the slot: those that started.
    "sum(durapod_run_start_latency_seconds_count)": 5,
    'max(durapod_queue_waiting{namespace="default", queue="narrow"})': 1,
    'max(durapod_queue_running{namespace="default", queue="narrow"})': 1,
    'max(durapod_queue_slots{namespace="default", queue="narrow"})': 1,
    'max(durapod_concurrency_key_running{queue="narrow", key="tenant-a"})': 1,
    'max(durapod_concurrency_key_waiting{queue="narrow", key="tenant-a"})': 1,
    'max(durapod_runs_active{task="held", phase="Running"})': 1,
    'max(durapod_runs_active{task="held", phase="Queued"})': 1,
}


def _differences(prometheus: Prometheus) -> dict[str, tuple[float | None, float]]:
    found = {expr: (prometheus.number(expr), value) for expr, value in EXPECTED.items()}
    return {expr: pair for expr, pair in found.items() if pair[0] != pair[1]}


def test_promql_counts_the_runs_outcomes_evictions_ooms_and_queues(
    prometheus: Prometheus, scenario: None
) -> None:
    try:
        wait_for(lambda: not _differences(prometheus), 60, "the expected values")
    except AssertionError:
        wrong = _differences(prometheus)
        pytest.fail("PromQL (got, expected):\n" + "\n".join(f"{e}: {v}" for e, v in wrong.items()))


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(series["value"][1]) for series in result]


def test_every_dashboard_query_parses_and_returns_data(
    prometheus: Prometheus, scenario: None
) -> None:
    # The counters must have been scraped at their final values first.
    wait_for(lambda: not _differences(prometheus), 60, "the scenario to be scraped")
    window = prometheus.window()
    empty, nan = [], []
    for query in panel_queries():
        result = prometheus.query(as_grafana_sends(query.expr, window))
        if not result:
            empty.append(str(query))
        elif all(math.isnan(v) for v in _values(result)):
            nan.append(str(query))
    for name, query in variable_queries().items():
        selector, label = label_values(query)
        if not prometheus.query(f"count by ({label}) ({as_grafana_sends(selector, window)})"):
            empty.append(f"variable {name}: {query}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert not nan, "queries with only NaN:\n" + "\n".join(nan)


def test_every_alert_parses_the_rules_evaluate_cleanly_and_nothing_is_down(
    prometheus: Prometheus, scenario: None
) -> None:
    found = alerts()
    for rule in found.values():
        prometheus.query(rule["expr"])  # a parse error is an "error" status
    # Their job and namespace are the targets': up, so not down (a wrong name is "absent").
    for down in ("DurapodOperatorDown", "DurapodAPIDown"):
        expr = found[down]["expr"]
        wait_for(lambda e=expr: prometheus.query(e) == [], 30, f"{down} to be quiet")

    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        done = all(r["lastEvaluation"] > "0001-01-01T00:00:00Z" for r in rules)
        return rules if done and len(rules) == len(found) else None

    rules = wait_for(evaluated, 30, "Prometheus to evaluate every rule")
    assert {r["name"]: (r["health"], r.get("lastError", "")) for r in rules} == {
        name: ("ok", "") for name in found
    }
