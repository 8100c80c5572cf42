"""The Helm chart's generated files: its CRD templates, its RBAC rules and its dashboard.

``helm/durapod`` installs the CRDs from ``templates/crd-*.yaml`` and grants the operator and
the API the rules in ``files/rbac.yaml``. Both are written here from the one source each
(``durapod/resources/models.py`` through ``durapod.resources.crds``, and
``durapod.permissions``), by ``make chart`` (``python -m durapod.chart helm/durapod``); a test
fails when the chart's copies drift. So is the Grafana dashboard, ``files/dashboard.json``
(from ``durapod.dashboard``), which the chart ships in a ConfigMap. The CRDs are templates,
not the chart's ``crds/`` directory, so ``helm upgrade`` updates them and
``crds.enabled``/``crds.keep`` apply.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from durapod import dashboard, permissions
from durapod.resources import crds

GENERATED = "Generated from {source} by `make chart`. Do not edit."
RBAC_FILE = "files/rbac.yaml"
DASHBOARD_FILE = "files/dashboard.json"

_CRD_TEMPLATE = """\
{{{{- /* {header} */}}}}
{{{{- if .Values.crds.enabled }}}}
apiVersion: {api_version}
kind: {kind}
metadata:
  name: {name}
  {{{{- if .Values.crds.keep }}}}
  annotations:
    helm.sh/resource-policy: keep
  {{{{- end }}}}
  labels:
    {{{{- include "durapod.labels" . | nindent 4 }}}}
{body}{{{{- end }}}}
"""


def _escape(text: str) -> str:
    """Text Helm prints as it is: a ``{{`` in a description is not an action."""
    return text.replace("{{", '{{ "{{" }}')


def crd_template(manifest: dict[str, Any]) -> str:
    """One CRD as a chart template, behind ``crds.enabled``, kept with ``crds.keep``."""
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
    return _CRD_TEMPLATE.format(
        header=GENERATED.format(source="durapod/resources/models.py"),
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        name=manifest["metadata"]["name"],
        body=_escape(yaml.safe_dump(body, sort_keys=False, width=100)),
    )


def rbac_rules() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Each component's rules, split the way the chart binds them.

    ``namespaced``: a ClusterRole's by default, a Role's in each of ``watchNamespaces`` when
    set. ``cluster``: always a ClusterRole's (cluster-scoped resources). ``watching``: added
    to the ClusterRole only when ``watchNamespaces`` is set.
    """
    extra = {"operator": permissions.OPERATOR_WATCHING_NAMESPACES}
    return {
        component: {
            "namespaced": [r.manifest() for r in rules if not r.cluster_scoped],
            "cluster": [r.manifest() for r in rules if r.cluster_scoped],
            "watching": [r.manifest() for r in extra.get(component, ())],
        }
        for component, rules in permissions.COMPONENTS.items()
    }


def rbac_file() -> str:
    header = f"# {GENERATED.format(source='durapod/permissions.py')}\n"
    listed = [
        *((c, rule) for c, rules in permissions.COMPONENTS.items() for rule in rules),
        *(("operator", rule) for rule in permissions.OPERATOR_WATCHING_NAMESPACES),
    ]
    why = "".join(
        f"#   {component}: {', '.join(rule.resources)} ({', '.join(rule.verbs)}): {rule.why}\n"
        for component, rule in listed
    )
    return (
        header
        + "# Why each rule is there:\n"
        + why
        + yaml.safe_dump(rbac_rules(), sort_keys=False, width=100)
    )


def files() -> dict[str, str]:
    """Every generated file of the chart: path relative to the chart, and its content."""
    out = {f"templates/crd-{m['metadata']['name']}.yaml": crd_template(m) for m in crds.all_crds()}
    out[RBAC_FILE] = rbac_file()
    out[DASHBOARD_FILE] = dashboard.json_text()
    return out


def write(chart: Path) -> list[Path]:
    """Write the generated files into ``chart`` and remove CRD templates no model makes."""
    wanted = files()
    for stale in (chart / "templates").glob("crd-*.yaml"):
        if f"templates/{stale.name}" not in wanted:
            stale.unlink()
    written = []
    for relative, text in wanted.items():
        path = chart / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m durapod.chart CHART_DIR", file=sys.stderr)
        return 2
    for path in write(Path(argv[0])):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
