"""durapod: durable background tasks for Kubernetes.

The SDK a task imports; everything here is light (standard library and the task's own
needs). The operator, API, store and dev parts live in their own subpackages.
"""

from durapod.runner.context import Context

__all__ = ["Context"]
__version__ = "0.1.0"
