"""The Python client (sync and async) and the CLI's run commands, over real HTTP against
durapod dev."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from durapod.client import AsyncClient, Client, InvalidRequest, NotFound, Unauthorized
from tests.helpers import BIN, DevProcess, definition, running_dev


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-client-") as process:
        process.apply(
            definition("double", "tests.tasks:double"),
            definition("failing", "tests.tasks:failing", retry={"maxAttempts": 1}),
        )
        yield process


@pytest.fixture(scope="module")
def client(dev: DevProcess) -> Iterator[Client]:
    env = dev.env()
    with Client(env["DURAPOD_API_URL"], env["DURAPOD_TOKEN"]) as durapod:
        yield durapod


def test_trigger_and_wait(client: Client) -> None:
    run = client.trigger("double", {"n": 4}, tags=["client"])
    assert run.phase in (None, "Pending", "Starting") and not run.finished
    done = client.wait(run.name, timeout=60)
    assert done.phase == "Succeeded" and done.output == 8
    assert client.get(run.name).raw["attempts"][0]["outcome"] == "Succeeded"


def test_idempotency_key_returns_the_first_run(client: Client) -> None:
    first = client.trigger("double", {"n": 1}, idempotency_key="client-key")
    second = client.trigger("double", {"n": 1}, idempotency_key="client-key")
    assert second.name == first.name and second.duplicate


def test_typed_errors(client: Client, dev: DevProcess) -> None:
    with pytest.raises(NotFound, match='TaskDefinition "nope" not found'):
        client.trigger("nope", {})
    with pytest.raises(InvalidRequest):
        client.trigger("double", {}, priority=5000)
    with pytest.raises(Unauthorized), Client(dev.env()["DURAPOD_API_URL"], "bad") as stranger:
        stranger.get("anything")
    failed = client.wait(client.trigger("failing", {"kind": "abort"}).name, timeout=60)
    assert failed.phase == "Failed" and failed.error is not None
    assert failed.error["type"] == "AbortRun"


def test_async_client(dev: DevProcess) -> None:
    env = dev.env()

    async def go() -> tuple[int, list[int]]:
        async with AsyncClient(env["DURAPOD_API_URL"], env["DURAPOD_TOKEN"]) as durapod:
            run = await durapod.trigger("double", {"n": 10})
            batch = await durapod.batch_trigger(
                [{"task": "double", "payload": {"n": i}} for i in range(2)]
            )
            outputs = [(await durapod.wait(r.name, timeout=60)).output for r in batch]
            return (await durapod.wait(run.name, timeout=60)).output, outputs

    assert asyncio.run(go()) == (20, [0, 2])


def _cli(dev: DevProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **dev.env(), "COLUMNS": "200"}
    return subprocess.run(
        [str(BIN / "durapod"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_trigger_get_list_logs(dev: DevProcess, client: Client) -> None:
    made = _cli(dev, "trigger", "double", "--payload", '{"n": 6}', "--tag", "cli", "-o", "json")
    assert made.returncode == 0, made.stderr
    name = json.loads(made.stdout)["name"]
    client.wait(name, timeout=60)
    got = json.loads(_cli(dev, "runs", "get", name, "-o", "json").stdout)
    assert got["output"] == 12 and got["phase"] == "Succeeded"
    table = _cli(dev, "runs", "list", "--tag", "cli").stdout
    assert name in table and "Succeeded" in table
    listed = json.loads(_cli(dev, "runs", "list", "--tag", "cli", "-o", "json").stdout)
    assert [r["name"] for r in listed] == [name]
    logs = _cli(dev, "runs", "logs", name)
    assert logs.returncode == 0 and "doubling 6" in logs.stdout


def test_cli_errors_exit_non_zero_with_the_reason(dev: DevProcess) -> None:
    unknown = _cli(dev, "trigger", "nope")
    assert unknown.returncode == 1 and 'TaskDefinition "nope" not found' in unknown.stderr
    bad = _cli(dev, "trigger", "double", "--payload", "{not json")
    assert bad.returncode == 2 and "--payload is not JSON" in bad.stderr
    missing = _cli(dev, "runs", "cancel", "no-such-run")
    assert missing.returncode == 1 and "not found" in missing.stderr
