"""API settings, read from the environment the chart or ``durapod dev`` sets."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    #: PostgreSQL DSN.
    database_url: str
    #: Secret shared with the operator that signs per-run tokens.
    run_token_secret: str

    @classmethod
    def from_env(cls) -> Settings:
        missing = [n for n in ("DATABASE_URL", "DURAPOD_RUN_TOKEN_SECRET") if not os.environ.get(n)]
        if missing:
            raise SystemExit(f"durapod api: missing environment variable(s): {', '.join(missing)}")
        return cls(os.environ["DATABASE_URL"], os.environ["DURAPOD_RUN_TOKEN_SECRET"])
