"""durapod: durable background tasks for Kubernetes.

The SDK a task imports; everything here is light (standard library and the task's own
needs). The operator, API, store and dev parts live in their own subpackages.
"""

from durapod.runner import *  # noqa: F403 - the SDK is the runner's public API
from durapod.runner import __all__ as __all__

__version__ = "0.1.0"
