"""The runner: the SDK task code uses, and the entrypoint of each task pod.

Light by contract (checked by import-linter): no operator, API, store or dev imports,
no kopf, psycopg or Kubernetes client, so a task pod starts fast.
"""

from durapod.runner.context import Context

__all__ = ["Context"]
