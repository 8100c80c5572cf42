"""Task functions the end-to-end tests run in pods."""

from __future__ import annotations

from typing import Any


def explode(payload: dict[str, Any]) -> None:
    raise ValueError(payload["why"])
