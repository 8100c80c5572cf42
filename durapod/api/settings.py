"""API settings, read from the environment the chart or ``durapod dev`` sets."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    #: PostgreSQL DSN.
    database_url: str
    #: Static bearer tokens (from a Secret); others are checked by TokenReview.
    api_tokens: list[str]
    #: Seconds a request waits for the database before it is answered 503.
    database_timeout: float = 5.0

    @classmethod
    def from_env(cls) -> Settings:
        if missing := [n for n in ("DATABASE_URL",) if not os.environ.get(n)]:
            raise SystemExit(f"durapod api: missing environment variable(s): {', '.join(missing)}")
        tokens = [t.strip() for t in os.environ.get("DURAPOD_API_TOKENS", "").split(",")]
        raw_timeout = os.environ.get("DURAPOD_DATABASE_TIMEOUT", "5")
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise SystemExit(
                f"durapod api: DURAPOD_DATABASE_TIMEOUT must be a positive number of seconds, "
                f"not {raw_timeout!r}"
            )
        return cls(
            os.environ["DATABASE_URL"],
            [t for t in tokens if t],
            timeout,
        )
