"""The chart's alerts (``templates/prometheusrule.yaml``), rendered by the real Helm and
checked by Debian's real ``promtool``: the rules are valid, they pass the unit tests in
``tests/promtool/`` (each alert firing and not firing), each says how bad it is and what to
do, and their thresholds and job names come from the values."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from durapod.api import metrics as api_metrics
from durapod.operator import metrics as operator_metrics
from tests.chart_helpers import CHART, EXTERNAL, template_text
from tests.helpers import REPO
from tests.observability import ENABLED, alerts, write_rules

PROMTOOL = "/usr/bin/promtool"
UNIT_TESTS = sorted((REPO / "tests" / "promtool").glob("*_test.yaml"))


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rendered_rules_pass_promtool_check_rules(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(write_rules(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_the_promtool_unit_tests_pass(tmp_path: Path) -> None:
    write_rules(tmp_path)
    assert UNIT_TESTS
    for source in UNIT_TESTS:
        shutil.copy(source, tmp_path / source.name)
    result = promtool("test", "rules", *(s.name for s in UNIT_TESTS), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_not_firing_unit_test() -> None:
    cases = [
        case
        for source in UNIT_TESTS
        for group in yaml.safe_load(source.read_text())["tests"]
        for case in group["alert_rule_test"]
    ]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    stays_quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fires == stays_quiet == set(alerts())


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    found = alerts()
    assert set(found) == {
        "DurapodRunsFailing",
        "DurapodQueueBacklogGrowing",
        "DurapodRunStartSlow",
        "DurapodCheckpointWritesSlow",
        "DurapodOperatorDown",
        "DurapodAPIDown",
        "DurapodReconcileErrors",
    }
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, name
        assert rule["for"], name
    assert found["DurapodOperatorDown"]["labels"]["severity"] == "critical"


def test_thresholds_come_from_the_values() -> None:
    changed = {
        "failingRunsRatio": 0.25,
        "queueBacklogMinutes": 30,
        "startLatencyP95Seconds": 120,
        "checkpointWriteP99Seconds": 0.5,
        "reconcileErrorsRatio": 0.02,
        "downMinutes": 2,
    }
    found = alerts({"metrics": {"prometheusRule": changed}})
    assert found["DurapodRunsFailing"]["expr"].rstrip().endswith("> 0.25")
    backlog = found["DurapodQueueBacklogGrowing"]
    assert "deriv(durapod_queue_waiting[30m])" in backlog["expr"] and backlog["for"] == "30m"
    assert found["DurapodRunStartSlow"]["expr"].rstrip().endswith("> 120")
    assert found["DurapodCheckpointWritesSlow"]["expr"].rstrip().endswith("> 0.5")
    assert found["DurapodReconcileErrors"]["expr"].rstrip().endswith("> 0.02")
    assert found["DurapodOperatorDown"]["for"] == found["DurapodAPIDown"]["for"] == "2m"


def test_the_down_alerts_name_the_services_scrape_jobs_in_the_release_namespace() -> None:
    found = alerts({"fullnameOverride": "dp"})
    for alert, job in (("DurapodOperatorDown", "dp-operator"), ("DurapodAPIDown", "dp-api")):
        up = f'up{{job="{job}", namespace="durapod-system"}}'
        assert found[alert]["expr"] == f"max by (job, namespace) ({up}) == 0 or absent({up})"


def test_latency_bounds_past_the_histograms_largest_bucket_are_refused() -> None:
    """``histogram_quantile`` never says more than the largest finite bucket: a bound past
    it could never fire, so the schema refuses it."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    rule = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]
    assert rule["startLatencyP95Seconds"]["exclusiveMaximum"] == max(operator_metrics.START)
    assert rule["checkpointWriteP99Seconds"]["exclusiveMaximum"] == max(api_metrics.WRITE)
    refused = template_text(
        EXTERNAL, ENABLED, {"metrics": {"prometheusRule": {"startLatencyP95Seconds": 3600}}},
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "startLatencyP95Seconds" in refused.stderr
