"""The public HTTP API over real HTTP against durapod dev: triggers, idempotency, reads,
cancel, replay, auth and errors. One record, two doors: what HTTP creates, kubectl sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.helpers import DevProcess, definition, running_dev, taskrun, wait_for


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-api-") as process:
        process.apply(
            definition("double", "tests.tasks:double"),
            definition(
                "typed",
                "tests.tasks:double",
                payloadSchema={
                    "type": "object",
                    "required": ["n"],
                    "properties": {"n": {"type": "integer"}},
                },
            ),
            definition("stuck", "tests.tasks:stuck"),
        )
        yield process


@pytest.fixture(scope="module")
def api(dev: DevProcess) -> Iterator[httpx.Client]:
    env = dev.env()
    with httpx.Client(
        base_url=env["DURAPOD_API_URL"] + "/v1/namespaces/default",
        headers={"Authorization": f"Bearer {env['DURAPOD_TOKEN']}"},
        timeout=30,
    ) as client:
        yield client


def _finished(api: httpx.Client, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        response = api.get(f"/runs/{name}")
        if response.status_code == 404:  # a kubectl-applied run, not yet seen by the operator
            return None
        run: dict[str, Any] = response.json()
        return run if run["phase"] in ("Succeeded", "Failed", "Cancelled") else None

    return wait_for(done, 60, f"run {name} to finish")


def test_trigger_answers_202_at_once_and_kubectl_sees_the_run(
    api: httpx.Client, dev: DevProcess
) -> None:
    response = api.post("/tasks/double/runs", json={"payload": {"n": 21}, "tags": ["demo"]})
    assert response.status_code == 202
    run = response.json()
    assert run["id"] and run["task"] == "double" and run["duplicate"] is False
    assert response.headers["location"] == f"/v1/namespaces/default/runs/{run['name']}"
    assert run["name"] in dev.kubectl("get", "tr").stdout
    detail = _finished(api, run["name"])
    assert detail["phase"] == "Succeeded" and detail["output"] == 42
    assert detail["tags"] == ["demo"] and detail["payload"] == {"n": 21}
    assert [(a["pod"], a["outcome"]) for a in detail["attempts"]] == [
        (f"{run['name']}-1", "Succeeded")
    ]


def test_a_kubectl_applied_run_is_visible_over_http(api: httpx.Client, dev: DevProcess) -> None:
    dev.apply(taskrun("from-kubectl", "double", {"n": 2}, tags=["door"]))
    assert _finished(api, "from-kubectl")["output"] == 4
    listed = api.get("/runs", params={"tag": "door"}).json()["runs"]
    assert [r["name"] for r in listed] == ["from-kubectl"]


def test_bad_requests_get_precise_errors_and_change_nothing(
    api: httpx.Client, dev: DevProcess
) -> None:
    before = dev.kubectl("get", "tr", "-o", "name").stdout
    unknown = api.post("/tasks/nope/runs", json={"payload": {}})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["detail"] == 'TaskDefinition "nope" not found in namespace "default"'
    typed = api.post("/tasks/typed/runs", json={"payload": {"n": "two"}})
    assert (
        typed.status_code == 422
        and "at n: 'two' is not of type 'integer'" in typed.json()["detail"]
    )
    big = api.post("/tasks/double/runs", json={"payload": {"x": "y" * (600 * 1024)}})
    assert big.status_code == 413 and "over the limit" in big.json()["detail"]
    unknown_field = api.post("/tasks/double/runs", json={"payload": {}, "priorty": 1})
    assert unknown_field.status_code == 422 and "priorty" in unknown_field.json()["detail"]
    assert dev.kubectl("get", "tr", "-o", "name").stdout == before


def test_requests_need_a_valid_token(dev: DevProcess) -> None:
    url = dev.env()["DURAPOD_API_URL"] + "/v1/namespaces/default/runs"
    assert httpx.get(url).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "the bearer token is not valid"


def test_a_kubernetes_token_is_accepted_by_token_review(dev: DevProcess) -> None:
    # The dev cluster's admin token is a Kubernetes credential the API does not know
    # statically: the API asks the API server (TokenReview) about it.
    admin = dev.home.joinpath("kubeconfig").read_text().split("token: ", 1)[1].split()[0]
    url = dev.env()["DURAPOD_API_URL"] + "/v1/namespaces/default/runs"
    assert httpx.get(url, headers={"Authorization": f"Bearer {admin}"}).status_code == 200


def test_a_hundred_concurrent_triggers_with_one_key_make_one_run(
    api: httpx.Client, dev: DevProcess
) -> None:
    env = dev.env()

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=env["DURAPOD_API_URL"] + "/v1/namespaces/default",
            timeout=60,
            headers={"Authorization": f"Bearer {env['DURAPOD_TOKEN']}"},
        ) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/tasks/double/runs",
                        json={"payload": {"n": 5}, "idempotencyKey": "order-77"},
                    )
                    for _ in range(100)
                )
            )

    responses = asyncio.run(fire())
    assert sorted({r.status_code for r in responses}) in ([200, 202], [202])
    names = {r.json()["name"] for r in responses}
    assert len(names) == 1
    assert sum(1 for r in responses if not r.json()["duplicate"]) == 1
    labelled = [
        line
        for line in dev.kubectl("get", "tr", "-o", "name").stdout.splitlines()
        if line.startswith("taskrun.durapod.io/double-")
    ]
    owners = [
        n
        for n in labelled
        if dev.taskrun(n.split("/")[1])["spec"].get("idempotencyKey") == "order-77"
    ]
    assert owners == [f"taskrun.durapod.io/{names.pop()}"]


def test_a_kubectl_applied_duplicate_gets_duplicate_of_and_no_pod(
    api: httpx.Client, dev: DevProcess
) -> None:
    first = api.post("/tasks/double/runs", json={"payload": {"n": 1}, "idempotencyKey": "k-9"})
    dev.apply(taskrun("dup-1", "double", {"n": 1}, idempotencyKey="k-9"))
    run = dev.wait_phase("dup-1", "Cancelled", "Succeeded", "Failed")
    assert run["status"]["duplicateOf"] == first.json()["name"]
    assert run["status"]["phase"] == "Cancelled"
    assert dev.pods_of("dup-1") == []


def test_after_its_ttl_a_key_makes_a_new_run(api: httpx.Client) -> None:
    body = {"payload": {"n": 3}, "idempotencyKey": "short", "idempotencyKeyTTL": "1s"}
    first = api.post("/tasks/double/runs", json=body).json()
    again = api.post("/tasks/double/runs", json=body).json()
    assert again["name"] == first["name"] and again["duplicate"] is True
    wait_for(
        lambda: api.post("/tasks/double/runs", json=body).json()["name"] != first["name"],
        10,
        "the key to expire",
    )


def test_list_filters_and_pages(api: httpx.Client) -> None:
    names = [
        api.post("/tasks/double/runs", json={"payload": {"n": i}, "tags": ["paged"]}).json()["name"]
        for i in range(5)
    ]
    # Each run is recorded before its trigger answers: listed at once.
    assert len(api.get("/runs", params={"tag": "paged"}).json()["runs"]) == 5
    seen, cursor = [], None
    while True:
        page = api.get(
            "/runs", params={"tag": "paged", "limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [r["name"] for r in page["runs"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == list(reversed(names))  # newest first, each once
    assert api.get("/runs", params={"task": "nope"}).json()["runs"] == []
    assert api.get("/runs", params={"phase": "Bogus"}).status_code == 422


def test_cancel_and_replay(api: httpx.Client) -> None:
    stuck = api.post("/tasks/stuck/runs", json={"payload": {}}).json()
    wait_for(
        lambda: api.get(f"/runs/{stuck['name']}").json()["phase"] == "Running",
        60,
        "the run to start",
    )
    assert api.post(f"/runs/{stuck['name']}/cancel").status_code == 202
    assert _finished(api, stuck["name"])["phase"] == "Cancelled"
    done = api.post("/tasks/double/runs", json={"payload": {"n": 8}}).json()
    _finished(api, done["name"])
    replay = api.post(f"/runs/{done['name']}/replay")
    assert replay.status_code == 202 and replay.json()["name"] != done["name"]
    assert _finished(api, replay.json()["name"])["output"] == 16
    assert api.post("/runs/missing/cancel").status_code == 404


def test_batch_trigger(api: httpx.Client) -> None:
    body = {
        "runs": [{"task": "double", "payload": {"n": i}} for i in range(3)]
        + [{"task": "double", "payload": {"n": 9}, "idempotencyKey": "batch-key"}] * 2
    }
    response = api.post("/runs/batch", json=body)
    assert response.status_code == 202
    runs = response.json()["runs"]
    assert len({r["name"] for r in runs}) == 4 and runs[3]["name"] == runs[4]["name"]
    assert [_finished(api, r["name"])["output"] for r in runs[:3]] == [0, 2, 4]
    too_many = {"runs": [{"task": "double"}] * 501}
    assert api.post("/runs/batch", json=too_many).status_code == 422


def test_openapi_is_served(dev: DevProcess) -> None:
    spec = httpx.get(dev.env()["DURAPOD_API_URL"] + "/openapi.json").json()
    assert "/v1/namespaces/{namespace}/tasks/{task}/runs" in spec["paths"]
    unavailable = spec["paths"]["/v1/namespaces/{namespace}/tasks/{task}/runs"]["post"][
        "responses"
    ]["503"]
    assert "Retry-After" in unavailable["headers"]
    assert not any(path.startswith("/internal") for path in spec["paths"])


def test_a_delayed_run_starts_after_its_delay(api: httpx.Client, dev: DevProcess) -> None:
    made = api.post("/tasks/double/runs", json={"payload": {"n": 2}, "delay": "2s"}).json()
    pending = dev.wait_phase(made["name"], "Pending")
    assert pending["status"]["resumeAt"] and dev.pods_of(made["name"]) == []
    done = _finished(api, made["name"])
    created = datetime.fromisoformat(done["createdAt"].replace("Z", "+00:00"))
    started = datetime.fromisoformat(done["attempts"][0]["createdAt"])
    assert done["output"] == 4 and (started - created).total_seconds() >= 1.5


def _names(api: httpx.Client) -> set[str]:
    names, cursor = set(), None
    while True:
        page = api.get("/runs", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
        names |= {r["name"] for r in page.json()["runs"]}
        if not (cursor := page.json()["nextCursor"]):
            return names


def test_get_and_list_agree_with_kubectl_after_deletes_reapplies_and_ttl(
    api: httpx.Client, dev: DevProcess
) -> None:
    def kubectl_names() -> set[str]:
        listed = dev.kubectl("get", "tr", "-o", "name").stdout.split()
        return {line.split("/", 1)[1] for line in listed}

    def agree() -> bool:
        return _names(api) == kubectl_names()

    dev.apply(taskrun("again", "double", {"n": 1}))
    assert _finished(api, "again")["output"] == 2
    dev.kubectl("delete", "tr", "again")
    wait_for(lambda: api.get("/runs/again").status_code == 404, 30, "the deleted run to go")
    assert "again" not in _names(api)
    dev.apply(taskrun("again", "double", {"n": 5}))
    second = _finished(api, "again")
    assert second["output"] == 10 and second["id"] == dev.taskrun("again")["metadata"]["uid"]
    listed = [r for r in api.get("/runs", params={"task": "double"}).json()["runs"]]
    assert [r["id"] for r in listed if r["name"] == "again"] == [second["id"]]
    expiring = api.post("/tasks/double/runs", json={"payload": {"n": 3}, "ttl": "1s"}).json()
    assert _finished(api, expiring["name"])["output"] == 6
    wait_for(
        lambda: api.get(f"/runs/{expiring['name']}").status_code == 404,
        30,
        "the expired run to go",
    )
    assert expiring["name"] not in _names(api)
    wait_for(agree, 30, "GET /runs and kubectl get tr to list the same runs")


def test_refused_runs_have_a_record_with_the_reason(api: httpx.Client, dev: DevProcess) -> None:
    """Every TaskRun gets its record, refused ones too: GET answers with the reason."""
    first = api.post("/tasks/double/runs", json={"payload": {"n": 1}, "idempotencyKey": "k-77"})
    assert first.status_code == 202, first.text
    dev.apply(taskrun("refused-dup", "double", {"n": 1}, idempotencyKey="k-77"))
    # kubectl create, not apply: apply's last-applied annotation would copy the payload,
    # and annotations over 256 KiB are refused by the API server (as by a real one).
    big = taskrun("refused-big", "double", {"blob": "x" * (600 * 1024)})
    dev.kubectl("create", "-f", "-", input=json.dumps(big))
    duplicate = _finished(api, "refused-dup")
    assert (duplicate["phase"], duplicate["duplicateOf"]) == ("Cancelled", first.json()["name"])
    assert duplicate["error"]["type"] == "Duplicate"
    big = _finished(api, "refused-big")
    assert (big["phase"], big["error"]["type"]) == ("Failed", "PayloadTooLarge")
    assert "over the limit" in big["error"]["message"]
    assert big["attempts"] == [] and dev.pods_of("refused-big") == []
