"""``python -m durapod.operator``: run the operator against the current kubeconfig."""

from __future__ import annotations

import logging
import os

import kopf

from durapod.operator import handlers
from durapod.operator.settings import watch_namespaces


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
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
