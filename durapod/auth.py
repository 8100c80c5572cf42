"""Per-run tokens: a pod may read and write only its own run.

A token is ``<namespace>.<hex HMAC-SHA256 over run id and namespace>`` under a secret the
operator and the API share, so the API checks it without a database read.
"""

from __future__ import annotations

import hashlib
import hmac


def run_token(secret: str, run_id: str, namespace: str) -> str:
    digest = hmac.new(secret.encode(), f"{run_id}\n{namespace}".encode(), hashlib.sha256)
    return f"{namespace}.{digest.hexdigest()}"


def verify_run_token(secret: str, run_id: str, token: str) -> bool:
    namespace, _, _ = token.partition(".")
    return hmac.compare_digest(run_token(secret, run_id, namespace), token)
