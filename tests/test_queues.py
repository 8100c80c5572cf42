"""Queues under load with 3 operator replicas and 2 API replicas: limits hold globally
(a sampler reading pod phases never sees a queue above its limit, even while a replica
is SIGKILLed), a ResourceQuota is back-pressure, and concurrency keys share fairly."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import DevProcess, definition, running_dev, wait_for

LIMITS = {"two": 2, "five": 5, "ten": 10}
LIVE = ("Pending", "Running")


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-queues-", "--operators", "3", "--apis", "2") as process:
        yield process


class Sampler(threading.Thread):
    """Reads pod phases from the API server until stopped; keeps the most seen per label."""

    def __init__(self, dev: DevProcess, namespace: str, label: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{dev.kube_url}/api/v1/namespaces/{namespace}/pods"
        self.label = label
        self.most: Counter[str] = Counter()
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                pods = client.get(self.url, params={"labelSelector": self.label}).json()["items"]
                now = Counter(
                    p["metadata"]["labels"][self.label]
                    for p in pods
                    if p["status"].get("phase") in LIVE
                )
                for key, count in now.items():
                    self.most[key] = max(self.most[key], count)
                self.samples += 1


def _post(url: str, token: str, path: str, body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/namespaces{path}",
        json=body,
        timeout=120,
        headers={"Authorization": f"Bearer {token}"},
    )


def _phases(dev: DevProcess, namespace: str, label: str) -> Counter[str]:
    listing = dev.get(f"/apis/durapod.io/v1/namespaces/{namespace}/taskruns", labelSelector=label)
    return Counter((r.get("status") or {}).get("phase", "") for r in listing["items"])


def _an_operator(dev: DevProcess) -> int:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"durapod.operator" in args:
            return int(cmdline.parent.name)
    raise AssertionError("no operator process")


def test_three_queues_never_exceed_their_limits(dev: DevProcess) -> None:
    env = dev.env()
    apis = env["DURAPOD_API_URLS"].split(",")
    assert len(apis) == 2
    dev.apply(
        *(
            definition(
                f"in-{q}", "tests.light_tasks:nap", queue={"name": q, "concurrencyLimit": limit}
            )
            for q, limit in LIMITS.items()
        )
    )
    sampler = Sampler(dev, "default", "durapod.io/queue")
    sampler.start()
    for i, queue in enumerate(LIMITS):
        runs = [
            {"task": f"in-{queue}", "payload": {"n": n, "pause": 0.2}, "tags": ["load"]}
            for n in range(100)
        ]
        response = _post(apis[i % 2], env["DURAPOD_TOKEN"], "/default/runs/batch", {"runs": runs})
        assert response.status_code == 202, response.text
    wait_for(
        lambda: (
            sum(_phases(dev, "default", "").values()) >= 300
            and _phases(dev, "default", "").get("Succeeded", 0) >= 60
        ),
        120,
        "a fifth done",
    )
    os.kill(_an_operator(dev), signal.SIGKILL)  # one replica dies mid-way
    wait_for(
        lambda: _phases(dev, "default", "").get("Succeeded", 0) == 300,
        300,
        "all 300 runs to succeed",
    )
    sampler.stop.set()
    sampler.join(30)
    assert sampler.samples > 20
    for queue, limit in LIMITS.items():  # never passed; busy enough to come near
        assert limit // 2 <= sampler.most[queue] <= limit, (queue, dict(sampler.most))


def test_a_resource_quota_is_back_pressure_not_failure(dev: DevProcess) -> None:
    dev.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "quota"}})
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "three-pods", "namespace": "quota"},
        "spec": {"hard": {"count/pods": "3"}},
    }
    capped = definition(
        "capped", "tests.light_tasks:nap", queue={"name": "wide", "concurrencyLimit": 10}
    )
    capped["metadata"]["namespace"] = "quota"
    dev.apply(quota, capped)
    sampler = Sampler(dev, "quota", "durapod.io/task")
    sampler.start()
    env = dev.env()
    runs = [{"task": "capped", "payload": {"n": n, "pause": 0.5}} for n in range(12)]
    assert (
        _post(
            env["DURAPOD_API_URL"], env["DURAPOD_TOKEN"], "/quota/runs/batch", {"runs": runs}
        ).status_code
        == 202
    )
    wait_for(
        lambda: _phases(dev, "quota", "").get("Succeeded", 0) == 12, 120, "all 12 runs to succeed"
    )
    sampler.stop.set()
    sampler.join(30)
    assert sampler.most["capped"] == 3
    events = dev.get("/api/v1/namespaces/quota/events")["items"]
    refused = [e for e in events if e["reason"] == "QuotaExceeded"]
    assert refused and "exceeded quota: three-pods" in refused[0]["message"]


def test_concurrency_keys_take_turns(dev: DevProcess) -> None:
    env = dev.env()
    dev.apply(
        definition(
            "shared", "tests.light_tasks:nap", queue={"name": "shared", "concurrencyLimit": 2}
        )
    )
    flood = [
        {"task": "shared", "payload": {"n": n}, "concurrencyKey": "tenant-a"} for n in range(200)
    ]
    polite = [
        {"task": "shared", "payload": {"n": n}, "concurrencyKey": "tenant-b"} for n in range(10)
    ]
    for runs in (flood, polite):
        assert (
            _post(
                env["DURAPOD_API_URL"], env["DURAPOD_TOKEN"], "/default/runs/batch", {"runs": runs}
            ).status_code
            == 202
        )
    with psycopg.connect(env["DATABASE_URL"]) as conn:

        def started() -> list[str]:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT r.concurrency_key FROM pods p JOIN runs r ON r.id = p.run_id "
                    "WHERE r.queue = 'shared' ORDER BY p.created_at"
                ).fetchall()
            ]

        order = wait_for(
            lambda: (s := started()).count("tenant-b") == 10 and s, 180, "tenant b's runs to start"
        )
    flooder_started = order[: max(i for i, k in enumerate(order) if k == "tenant-b") + 1].count(
        "tenant-a"
    )
    # Tenant b's ten runs all started while most of the flood was still waiting.
    assert flooder_started <= 40, order
