"""``durapod definitions``: TaskDefinitions generated from ``@task`` code, and obeyed.

The unit tests pin the generated spec (a table: decorator options → spec) and its
discovery rules. The end-to-end tests run ``durapod dev --tasks DIR`` with a user's
package in a temporary directory outside the checkout, generate and ``--apply`` its
definitions with the real CLI, then check the cluster obeys them: the retry policy from
the decorator (exactly 2 attempts), the payload schema from the pydantic model (a bad
payload is a 422 before any run exists, ``$defs``/``$ref`` included), the queue, and the
printed manifests as ``kubectl apply`` takes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from durapod import Context, OnOOM, Queue, Retry, task
from durapod.cli import definitions as cli
from durapod.client import Client, InvalidRequest
from durapod.resources.definitions import DefinitionError, manifest, spec
from durapod.resources.models import TaskDefinitionSpec
from tests.helpers import BIN, DevProcess, running_dev

SHOP = {
    "shop/__init__.py": '"""A user\'s task package, outside the durapod checkout."""\n',
    "shop/models.py": """
        from pydantic import BaseModel


        class Item(BaseModel):
            sku: str
            quantity: int = 1


        class Order(BaseModel):
            id: int
            items: list[Item]
    """,
    "shop/orders.py": """
        from datetime import timedelta

        from durapod import Context, Queue, Retry, task
        from shop.models import Order


        @task(
            "charge-order",
            retry=Retry(max_attempts=2, min_delay=timedelta(milliseconds=100), jitter=False),
            queue=Queue("orders", concurrency_limit=2),
            max_duration=timedelta(minutes=5),
        )
        def charge_order(order: Order, ctx: Context) -> None:
            raise RuntimeError(f"the card for order {order.id} is declined (attempt {ctx.attempt})")
    """,
    "shop/greetings.py": """
        from pydantic import BaseModel

        from durapod import task


        class Greeting(BaseModel):
            name: str


        @task(queue="greetings")
        async def greet(payload: Greeting) -> dict[str, str]:
            return {"hello": payload.name}
    """,
}


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def _definitions(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``durapod definitions``, run from the user's project directory."""
    return subprocess.run(
        [str(BIN / "durapod"), "definitions", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the generated spec, without a cluster ----------------------------------------------


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


class Path2(pydantic.BaseModel):
    points: list[Point]


def _plain(payload: Any) -> None: ...


def _typed(payload: Path2, ctx: Context) -> None: ...


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {}),
        ({"queue": "emails"}, {"queue": {"name": "emails"}}),
        (
            {"queue": Queue("emails", concurrency_limit=3, concurrency_key_limit=1)},
            {"queue": {"name": "emails", "concurrencyLimit": 3, "concurrencyKeyLimit": 1}},
        ),
        (
            {"retry": Retry(max_attempts=2)},
            {
                "retry": {
                    "maxAttempts": 2,
                    "minDelay": "1s",
                    "maxDelay": "5m",
                    "factor": 2.0,
                    "jitter": True,
                    "nonRetryableErrors": [],
                }
            },
        ),
        (
            {
                "retry": Retry(
                    max_attempts=7,
                    min_delay=timedelta(milliseconds=250),
                    max_delay=timedelta(minutes=1, seconds=30),
                    factor=3,
                    jitter=False,
                    non_retryable_errors=("KeyError", "PermissionError"),
                    on_oom=OnOOM(upgrade_machine=True),
                )
            },
            {
                "retry": {
                    "maxAttempts": 7,
                    "minDelay": "250ms",
                    "maxDelay": "1m30s",
                    "factor": 3.0,
                    "jitter": False,
                    "nonRetryableErrors": ["KeyError", "PermissionError"],
                    "onOOM": {"upgradeMachine": True},
                }
            },
        ),
        ({"machine": "large-1x"}, {"machine": "large-1x"}),
        ({"max_duration": timedelta(hours=1, minutes=30)}, {"maxDuration": "1h30m"}),
        ({"ttl": timedelta(days=2)}, {"ttl": "2d"}),
        ({"start_deadline": timedelta(seconds=45)}, {"startDeadline": "45s"}),
    ],
)
def test_the_spec_holds_what_the_decorator_declares(
    options: dict[str, Any], expected: dict[str, Any]
) -> None:
    declared = task("some-task", **options)(_plain)
    generated = spec(declared, image="shop:1.2.0", entrypoint="shop.tasks:some_task")
    assert generated == {"image": "shop:1.2.0", "entrypoint": "shop.tasks:some_task", **expected}
    # ... and reads back as the operator reads it, to the very same options
    read = TaskDefinitionSpec.model_validate(generated)
    if "retry" in options:
        assert read.retry == options["retry"]
    if "queue" in options:
        assert read.queue == declared.queue


def test_the_payload_schema_is_the_models_with_defs_and_refs() -> None:
    generated = spec(task("draw")(_typed), image="i", entrypoint="m:draw")
    schema = generated["payloadSchema"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["points"]["items"] == {"$ref": "#/$defs/Point"}
    assert schema["$defs"]["Point"]["required"] == ["x"]
    assert schema == {"$schema": schema["$schema"], **Path2.model_json_schema()}
    assert "payloadSchema" not in spec(task("plain")(_plain), image="i", entrypoint="m:plain")


def test_a_manifest_is_the_same_every_time_and_names_its_namespace_when_asked() -> None:
    declared = task("draw", retry=Retry(max_attempts=2), queue="art")(_typed)
    first = manifest(declared, "shop:1", "shop.art:draw", namespace="shop")
    assert first["metadata"] == {
        "name": "draw",
        "namespace": "shop",
        "labels": {"app.kubernetes.io/managed-by": "durapod"},
    }
    assert json.dumps(first) == json.dumps(manifest(declared, "shop:1", "shop.art:draw", "shop"))
    assert "namespace" not in manifest(declared, "shop:1", "shop.art:draw")["metadata"]
    assert list(first["spec"]) == ["image", "entrypoint", "retry", "queue", "payloadSchema"]


def test_options_the_cluster_would_refuse_fail_at_generation() -> None:
    with pytest.raises(DefinitionError, match=r"(?s)task big: .*machine"):
        spec(task("big", machine="huge-9x")(_plain), image="i", entrypoint="m:big")
    with pytest.raises(DefinitionError, match=r"(?s)task t: .*entrypoint"):
        spec(task("t")(_plain), image="i", entrypoint="not an entrypoint")


def test_discovery_finds_each_task_once_under_its_home_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, SHOP)
    (tmp_path / "shop/__init__.py").write_text("from shop.orders import charge_order\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        found = cli.find_tasks(["shop"])
        assert [(f.task.id, f.entrypoint) for f in found] == [
            ("charge-order", "shop.orders:charge_order"),  # not shop:charge_order
            ("greet", "shop.greetings:greet"),
        ]
        assert [f.task.id for f in cli.find_tasks(["shop/greetings.py"])] == ["greet"]
    finally:
        for name in [m for m in sys.modules if m == "shop" or m.startswith("shop.")]:
            del sys.modules[name]


def test_two_tasks_with_one_name_are_refused(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "twice.py": """
                from durapod import task

                @task("same")
                def one(payload): ...

                @task("same")
                def two(payload): ...
            """
        },
    )
    result = _definitions(tmp_path, "twice", "--image", "i")
    assert result.returncode == 1
    assert "two tasks are named 'same': twice:one and twice:two" in result.stderr


def test_an_import_error_shows_the_users_traceback(tmp_path: Path) -> None:
    _write(tmp_path, {"broken.py": "import no_such_dependency\n"})
    result = _definitions(tmp_path, "broken", "--image", "i")
    assert result.returncode == 1
    assert "cannot import broken" in result.stderr
    assert "No module named 'no_such_dependency'" in result.stderr


# -- end to end: generated, applied, obeyed ----------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("user-project"), SHOP)


@pytest.fixture(scope="module")
def dev(project: Path) -> Iterator[DevProcess]:
    with running_dev("durapod-definitions-", "--tasks", str(project)) as process:
        yield process


@pytest.fixture(scope="module")
def client(dev: DevProcess) -> Iterator[Client]:
    env = dev.env()
    with Client(env["DURAPOD_API_URL"], env["DURAPOD_TOKEN"]) as durapod:
        yield durapod


@pytest.fixture(scope="module")
def applied(dev: DevProcess, project: Path) -> list[str]:
    result = _definitions(project, "shop", "--image", "durapod:dev", "--apply", env=dev.env())
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_apply_reports_created_then_unchanged_then_configured(
    applied: list[str], dev: DevProcess, project: Path, tmp_path: Path
) -> None:
    assert applied == [
        "taskdefinition.durapod.io/charge-order created",
        "taskdefinition.durapod.io/greet created",
    ]
    again = _definitions(project, "shop", "--image", "durapod:dev", "--apply", env=dev.env())
    assert again.stdout.splitlines() == [
        "taskdefinition.durapod.io/charge-order unchanged",
        "taskdefinition.durapod.io/greet unchanged",
    ]
    # Someone edits a field the code owns: the next apply puts the code's value back.
    dev.kubectl("patch", "td", "greet", "--type", "merge", "-p", '{"spec":{"machine":"micro"}}')
    nine = '{"spec":{"retry":{"maxAttempts":9}}}'
    dev.kubectl("patch", "td", "charge-order", "--type", "merge", "-p", nine)
    third = _definitions(project, "shop", "--image", "durapod:dev", "--apply", env=dev.env())
    assert third.stdout.splitlines() == [
        "taskdefinition.durapod.io/charge-order configured",
        "taskdefinition.durapod.io/greet unchanged",  # machine is not the code's field
    ]
    retry = dev.kubectl("get", "td", "charge-order", "-o", "jsonpath={.spec.retry}").stdout
    assert json.loads(retry)["maxAttempts"] == 2
    assert dev.kubectl("get", "td", "greet", "-o", "jsonpath={.spec.machine}").stdout == "micro"

    # An option dropped from the code is dropped from the object: the CRD's default returns.
    greet = SHOP["shop/greetings.py"].replace('@task(queue="greetings")', "@task")
    edited = _write(tmp_path, {**SHOP, "shop/greetings.py": greet})
    fourth = _definitions(edited, "shop", "--image", "durapod:dev", "--apply", env=dev.env())
    assert fourth.stdout.splitlines() == [
        "taskdefinition.durapod.io/charge-order unchanged",
        "taskdefinition.durapod.io/greet configured",
    ]
    queue = dev.kubectl("get", "td", "greet", "-o", "jsonpath={.spec.queue}").stdout
    assert json.loads(queue) == {"name": "default"}
    restored = _definitions(project, "shop", "--image", "durapod:dev", "--apply", env=dev.env())
    assert restored.stdout.splitlines()[1] == "taskdefinition.durapod.io/greet configured"


def test_the_cluster_holds_the_decorators_options(applied: list[str], dev: DevProcess) -> None:
    td = json.loads(dev.kubectl("get", "td", "charge-order", "-o", "json").stdout)
    assert td["spec"]["entrypoint"] == "shop.orders:charge_order"
    assert td["spec"]["queue"] == {"name": "orders", "concurrencyLimit": 2}
    assert td["spec"]["maxDuration"] == "5m"
    assert td["spec"]["retry"]["minDelay"] == "100ms"
    assert td["spec"]["payloadSchema"]["$defs"]["Item"]["required"] == ["sku"]
    table = dev.kubectl("get", "td").stdout
    assert "shop.greetings:greet" in table and "greetings" in table


def test_a_task_from_the_tasks_directory_runs(applied: list[str], client: Client) -> None:
    run = client.trigger("greet", {"name": "you"})
    done = client.wait(run.name, timeout=90)
    assert done.phase == "Succeeded", done.error
    assert done.output == {"hello": "you"}


def test_a_failing_run_stops_after_exactly_the_declared_attempts(
    applied: list[str], client: Client, dev: DevProcess
) -> None:
    run = client.trigger("charge-order", {"id": 7, "items": [{"sku": "tea"}]})
    done = client.wait(run.name, timeout=120)
    assert done.phase == "Failed"
    status = json.loads(dev.kubectl("get", "tr", run.name, "-o", "json").stdout)["status"]
    assert status["attempt"] == 2
    assert status["error"]["type"] == "RuntimeError"
    assert "attempt 2" in status["error"]["message"]
    assert [a["outcome"] for a in client.get(run.name).raw["attempts"]] == ["TaskError"] * 2


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"items": []}, "(root)"),  # id missing
        ({"id": "seven", "items": []}, "id"),  # JSON Schema does not coerce
        ({"id": 7, "items": [{"quantity": 2}]}, "items/0"),  # $defs/Item: sku missing
    ],
)
def test_a_bad_payload_is_refused_before_any_run_exists(
    applied: list[str], client: Client, payload: dict[str, Any], where: str
) -> None:
    before = client.list(task="charge-order")["runs"]
    with pytest.raises(InvalidRequest) as refused:
        client.trigger("charge-order", payload)
    assert refused.value.status == 422
    assert f"payload does not match the schema of task charge-order at {where}" in str(
        refused.value
    )
    assert client.list(task="charge-order")["runs"] == before


def test_printed_manifests_are_what_kubectl_applies(
    applied: list[str], dev: DevProcess, project: Path
) -> None:
    namespace = "printed"
    dev.kubectl("create", "namespace", namespace)
    printed = _definitions(project, "shop", "--image", "durapod:dev", "-n", namespace)
    assert printed.returncode == 0, printed.stderr
    docs = list(yaml.safe_load_all(printed.stdout))
    assert [d["metadata"]["namespace"] for d in docs] == [namespace] * 2
    result = dev.kubectl("apply", "-f", "-", input=printed.stdout)
    assert result.stdout.splitlines() == [
        "taskdefinition.durapod.io/charge-order created",
        "taskdefinition.durapod.io/greet created",
    ]
    stored = json.loads(dev.kubectl("get", "td", "-n", namespace, "-o", "json").stdout)
    assert {td["metadata"]["name"]: td["spec"]["entrypoint"] for td in stored["items"]} == {
        "charge-order": "shop.orders:charge_order",
        "greet": "shop.greetings:greet",
    }
    # -o json is the same objects in one List, as `kubectl get -o json` prints them.
    as_json = _definitions(project, "shop", "--image", "durapod:dev", "-n", namespace, "-o", "json")
    listing = json.loads(as_json.stdout)
    assert (listing["apiVersion"], listing["kind"]) == ("v1", "List")
    assert listing["items"] == docs
