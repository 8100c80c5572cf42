"""What the chart ships for Prometheus and Grafana, as tests read it: the alerting rules
(rendered by Helm from ``templates/prometheusrule.yaml``) and the dashboard's queries (from
the shipped ``files/dashboard.json``), with Grafana's variables filled in as Grafana would."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from durapod import chart
from tests.chart_helpers import CHART, EXTERNAL, find, render

ENABLED = {"metrics": {"prometheusRule": {"enabled": True}}}
#: The scrape jobs of release ``durapod`` (the ServiceMonitor's: its Services' names).
OPERATOR_JOB, API_JOB = "durapod-operator", "durapod-api"


def rule_groups(*values: dict[str, Any]) -> list[dict[str, Any]]:
    """The PrometheusRule's ``spec.groups`` as the chart renders them with ``values``."""
    (rule,) = find(render(EXTERNAL, ENABLED, *values), "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alerts(*values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every alerting rule, by its name."""
    return {r["alert"]: r for g in rule_groups(*values) for r in g["rules"] if "alert" in r}


def write_rules(directory: Path) -> Path:
    """The rendered rules as a Prometheus rule file (what the prometheus-operator loads)."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return path


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"{self.panel!r} {self.ref}: {self.expr}"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / chart.DASHBOARD_FILE).read_text())
    return loaded


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(panel["title"], target["refId"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def variable_queries() -> dict[str, str]:
    """Each query variable's ``label_values(...)`` query, by name."""
    return {
        v["name"]: v["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"
    }


def label_values(query: str) -> tuple[str, str]:
    """The selector and label of Grafana's ``label_values(selector, label)``."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    assert match, query
    return match.group(1), match.group(2)


def as_grafana_sends(expr: str, window: str) -> str:
    """``expr`` with the dashboard's variables as Grafana fills them in: every namespace and
    queue ("All"), release ``durapod``'s jobs, and ``window`` as the rate interval and range."""
    for name, value in {
        "$__rate_interval": window,
        "$__range": window,
        "$namespace": ".*",
        "$queue": ".*",
        "$operator_job": OPERATOR_JOB,
        "$api_job": API_JOB,
    }.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable left unfilled: {expr}"
    return expr
