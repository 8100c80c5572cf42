"""PostgreSQL stopped under a running ``durapod dev``: triggers get 503 with Retry-After
and create nothing, no process crashes, and once the database is back the runs that were
in flight, the runs applied meanwhile and a trigger retried with its key all complete."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx

from durapod.dev.postgres import PostgresServer
from tests.helpers import definition, operator_pid, running_dev, taskrun, wait_for


def test_with_postgres_stopped_triggers_get_503_and_everything_completes_once_it_is_back() -> None:
    with running_dev("durapod-outage-") as dev:
        env = dev.env()
        api, token = env["DURAPOD_API_URL"], env["DURAPOD_TOKEN"]
        dev.apply(
            definition("quick", "tests.tasks:quick"),
            taskrun("before-1", "quick", {"n": 1, "pause": 3}),
        )
        dev.wait_phase("before-1", "Running")
        operator = operator_pid(dev)
        port = urlsplit(env["DATABASE_URL"]).port
        assert port is not None
        postgres = PostgresServer(Path(dev.home) / "postgres", port=port)
        assert (postgres.data_dir / "postmaster.pid").exists()
        postgres.stop("fast")

        trigger = f"{api}/v1/namespaces/default/tasks/quick/runs"
        body = {"payload": {"n": 5}, "idempotencyKey": "during-outage"}
        headers = {"Authorization": f"Bearer {token}"}
        refused = httpx.post(trigger, json=body, headers=headers, timeout=60)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "database" in refused.json()["detail"]
        assert httpx.get(f"{api}/healthz", timeout=30).status_code == 200
        assert httpx.get(f"{api}/readyz", timeout=30).status_code == 503
        names = {
            r["metadata"]["name"]
            for r in dev.get("/apis/durapod.io/v1/namespaces/default/taskruns")["items"]
        }
        assert names == {"before-1"}  # the refused trigger created nothing
        dev.apply(taskrun("meanwhile-1", "quick", {"n": 7}))  # the cluster still takes runs

        postgres.start()
        wait_for(lambda: httpx.get(f"{api}/readyz", timeout=30).status_code == 200, 60, "readiness")
        first = httpx.post(trigger, json=body, headers=headers, timeout=60)
        again = httpx.post(trigger, json=body, headers=headers, timeout=60)
        assert first.status_code == 202 and again.status_code == 200, (first.text, again.text)
        assert first.json()["name"] == again.json()["name"]
        for name, output in (("before-1", 2), ("meanwhile-1", 8), (first.json()["name"], 6)):
            run = dev.wait_phase(name, "Succeeded", "Failed", timeout=180)
            assert (run["status"]["phase"], run["status"]["output"]) == ("Succeeded", output)
        assert operator_pid(dev) == operator  # it waited; it did not crash
