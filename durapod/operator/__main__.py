"""``python -m durapod.operator``: run the operator against the current kubeconfig."""

from __future__ import annotations

import os

import kopf

from durapod import logs, tracing
from durapod.operator import handlers
from durapod.operator.settings import watch_namespaces


def main() -> None:
    # kopf.run configures no logging (only its CLI does): its records, with the object
    # each is about (``extra``), come out through this, as JSON lines like ours.
    logs.setup("operator")
    tracing.setup("durapod-operator")  # only if OTEL_* configure an OTLP endpoint
    assert handlers  # registering the handlers is importing them
    namespaces = watch_namespaces()
    # Readiness and liveness: kopf answers GET on this URL once it is up.
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=os.environ.get("DURAPOD_OPERATOR_HEALTH_URL"),
    )


if __name__ == "__main__":
    main()
