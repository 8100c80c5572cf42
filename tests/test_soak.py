"""The bounded chaos soak (``benchmarks/soak.py``) in the suite: 60 five-step runs across
three queues, 2 operator and 2 API replicas, while pods are SIGKILLed mid-step, evicted
and OOM-killed, operator replicas and an API replica are SIGKILLed, PostgreSQL restarts
with ``-m immediate`` and every backend is terminated. Nothing may be lost or run twice.
``DURAPOD_SOAK_SEED`` replays a seed; the seed is printed either way."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from benchmarks.soak import Config, soak


@pytest.mark.timeout(1200)
def test_a_chaos_soak_loses_nothing_and_runs_nothing_twice(
    open_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPOD_RESYNC_SECONDS", "10")
    config = Config(runs=60, steps=5, operators=2, apis=2)
    if seed := os.environ.get("DURAPOD_SOAK_SEED"):
        config.seed = int(seed)
    print(f"soak seed {config.seed}")
    report = asyncio.run(soak(config, open_tmp))
    print(report.summary())
    assert report.ok, report.summary()
    # The faults happened: a soak that injected nothing proves nothing.
    assert report.faults["postgres"] == 1 and report.faults["backends"] == 1, report.faults
    assert report.faults["operator"] >= 3 and report.faults["evict"] >= 3, report.faults
    assert report.faults["pod"] >= 3 and report.faults["oom"] >= 1, report.faults
    assert report.exercised["sleep"] >= 5 and report.exercised["child"] >= 5, report.exercised
    assert report.samples > 20
