"""End to end: `durapod dev` as a user runs it, driven with the real kubectl 1.35."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, DevProcess, definition, running_dev, taskrun, wait_for


@pytest.fixture(scope="module", params=["processes", "helm"])
def dev(request: pytest.FixtureRequest) -> Iterator[DevProcess]:
    """Each test runs twice: with the operator and the API as processes beside the
    stand-in, and installed by ``helm`` from the chart, running as its pods."""
    if request.param == "helm":
        with running_dev("durapod-e2e-helm-", "--install", "helm", start_timeout=420) as process:
            yield process
    else:
        env = {"DURAPOD_UNKNOWN_TASK_GRACE_SECONDS": "1"}
        with running_dev("durapod-e2e-", env=env) as process:
            yield process


def _phase(dev: DevProcess, name: str) -> str:
    return dev.kubectl("get", "tr", name, "-o", "jsonpath={.status.phase}", check=False).stdout


def _finished(dev: DevProcess, name: str) -> str:
    return wait_for(
        lambda: _phase(dev, name) in ("Succeeded", "Failed") and _phase(dev, name),
        60,
        f"run {name} to finish",
    )


def columns(table: list[str], name: str) -> dict[str, str]:
    """The cells of ``name``'s row of a ``kubectl get`` table, by header (blank cells too)."""
    header = table[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    row = next(line for line in table if line.startswith(f"{name} "))
    bounds = zip(starts, [*starts[1:], None], strict=True)
    return {header.split()[i]: row[a:b].strip() for i, (a, b) in enumerate(bounds)}


def test_kubectl_apply_get_describe_delete_the_hello_example(dev: DevProcess) -> None:
    applied = dev.kubectl("apply", "-f", str(REPO / "examples/hello/")).stdout
    assert "taskdefinition.durapod.io/hello created" in applied
    assert "taskrun.durapod.io/hello-1 created" in applied
    assert _finished(dev, "hello-1") == "Succeeded"

    table = dev.kubectl("get", "tr").stdout.splitlines()
    assert table[0].split() == ["NAME", "TASK", "PHASE", "REASON", "ATTEMPT", "AGE", "DURATION"]
    row = columns(table, "hello-1")
    assert (row["TASK"], row["PHASE"], row["ATTEMPT"]) == ("hello", "Succeeded", "1")
    assert row["REASON"] in ("", "<none>")

    run = yaml.safe_load(dev.kubectl("get", "tr", "hello-1", "-o", "yaml").stdout)
    assert run["status"]["output"] == {"greeting": "Hello, world!", "attempt": 1}
    assert run["status"]["definition"]["entrypoint"] == "examples.hello.tasks:hello"
    succeeded = {c["type"]: c["status"] for c in run["status"]["conditions"]}
    assert succeeded["Succeeded"] == "True" and succeeded["Failed"] == "False"

    described = dev.kubectl("describe", "tr", "hello-1").stdout
    events = described[described.index("Events:") :]
    # In the order they happened, though all came within a second. (A busy machine may
    # see the pod only once it has ended: then there is no Running in between.)
    reasons = [line.split()[1] for line in events.splitlines()[3:] if line.strip()]
    assert reasons in (
        ["Queued", "PodCreated", "Running", "Succeeded"],
        ["Queued", "PodCreated", "Succeeded"],
    ), events
    assert "durapod-operator" in events

    waited = dev.kubectl("wait", "--for=condition=Succeeded", "tr/hello-1", "--timeout=10s")
    assert "condition met" in waited.stdout

    pod = run["status"]["podName"]
    assert dev.kubectl("get", "pod", pod, "-o", "jsonpath={.status.phase}").stdout == "Succeeded"
    assert "saying hello to world" in dev.kubectl("logs", pod).stdout
    deleted = dev.kubectl("delete", "tr", "hello-1").stdout
    assert 'taskrun.durapod.io "hello-1" deleted' in deleted
    assert dev.kubectl("get", "tr", "hello-1", check=False).returncode != 0
    # The run's pod goes with it (owner references).
    wait_for(
        lambda: dev.kubectl("get", "pod", pod, check=False).returncode != 0,
        30,
        "the run's pod to be collected",
    )


def test_kubectl_rejects_an_invalid_taskrun_naming_the_field(
    dev: DevProcess, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: durapod.io/v1\nkind: TaskRun\nmetadata: {name: bad}\n"
        "spec: {task: hello, priority: urgent}\n"
    )
    result = dev.kubectl("apply", "-f", str(bad), check=False)
    assert result.returncode != 0
    assert 'The TaskRun "bad" is invalid' in result.stderr
    assert "spec.priority" in result.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "apiVersion: durapod.io/v1\nkind: TaskRun\nmetadata: {name: typo}\n"
        "spec: {task: hello, payloda: {}}\n"
    )
    result = dev.kubectl("apply", "-f", str(typo), check=False)
    assert result.returncode != 0 and 'unknown field "spec.payloda"' in result.stderr
    assert dev.kubectl("get", "tr", "bad", check=False).returncode != 0


def test_a_task_error_fails_the_run_with_type_message_and_traceback(dev: DevProcess) -> None:
    dev.apply(
        definition("boom", "tests.tasks:explode", retry={"maxAttempts": 1}),
        taskrun("boom-1", "boom", {"why": "no luck"}),
    )
    assert _finished(dev, "boom-1") == "Failed"
    error = json.loads(dev.kubectl("get", "tr", "boom-1", "-o", "jsonpath={.status.error}").stdout)
    assert error["type"] == "ValueError" and error["message"] == "no luck"
    assert error["reason"] == "TaskError" and "raise ValueError" in error["traceback"]
    assert "TaskError: no luck" in dev.kubectl("describe", "tr", "boom-1").stdout


def test_an_unknown_task_fails_the_run_with_a_precise_reason(dev: DevProcess) -> None:
    dev.apply(taskrun("ghost-1", "no-such-task", {}))
    assert _finished(dev, "ghost-1") == "Failed"
    message = dev.kubectl("get", "tr", "ghost-1", "-o", "jsonpath={.status.error.message}").stdout
    assert message == 'TaskDefinition "no-such-task" not found in namespace "default"'
    assert dev.kubectl("get", "pods", "-l", "durapod.io/run=ghost-1", "-o", "name").stdout == ""


def test_an_unloadable_entrypoint_fails_the_run(dev: DevProcess) -> None:
    dev.apply(
        definition("missing", "tests.tasks:does_not_exist"),
        taskrun("missing-1", "missing", {}),
    )
    assert _finished(dev, "missing-1") == "Failed"
    error = json.loads(
        dev.kubectl("get", "tr", "missing-1", "-o", "jsonpath={.status.error}").stdout
    )
    assert error["reason"] == "EntrypointError" and "does_not_exist" in error["message"]


def test_the_resume_example_carries_on_after_kubectl_delete_pod(dev: DevProcess) -> None:
    dev.kubectl("apply", "-f", str(REPO / "examples/resume/"))

    def checkpointed() -> str | None:
        status = (dev.taskrun("resume-demo-1") or {}).get("status") or {}
        return (status.get("lastCheckpoint") or {}).get("step") and status["podName"]

    pod = wait_for(checkpointed, 60, "the first checkpoint")
    dev.kubectl("delete", "pod", pod)
    run = dev.wait_phase("resume-demo-1", "Succeeded", "Failed")
    status = run["status"]
    assert status["phase"] == "Succeeded"
    assert status["attempt"] == 1 and status["resumes"] >= 1
    ran_in = [s["pod"] for s in status["output"]["steps"]]
    assert [s["step"] for s in status["output"]["steps"]] == [1, 2, 3, 4, 5]
    assert ran_in[0] == pod and ran_in[-1] == status["podName"] != pod
    # The steps done before the deletion were not run again by the new pod.
    later = dev.kubectl("logs", status["podName"]).stdout
    for step in (s for s in status["output"]["steps"] if s["pod"] == pod):
        assert f"step {step['step']} done" not in later


def test_runs_with_long_names_get_valid_labels_and_each_finds_its_own_pod(
    dev: DevProcess,
) -> None:
    """Label values hold 63 bytes (the stand-in refuses more, as a real server does): a
    run of 100 characters labels its pod with a shortened, hashed value and keeps its
    full name in an annotation; two such runs sharing a long prefix stay apart."""
    prefix = "a-rather-long-name-for-a-run-" * 3
    names = [f"{prefix}{tail}".ljust(100, "x")[:99] + tail for tail in ("1", "2")]
    assert all(len(n) == 100 for n in names) and names[0][:63] == names[1][:63]
    dev.apply(
        definition("twice", "tests.tasks:double"),
        *(taskrun(name, "twice", {"n": i}) for i, name in enumerate(names, 1)),
    )
    for i, name in enumerate(names, 1):
        run = dev.wait_phase(name, "Succeeded", "Failed", timeout=90)
        assert (run["status"]["phase"], run["status"]["output"]) == ("Succeeded", 2 * i)
        [pod] = dev.pods_of(name)  # the label finds exactly this run's pod
        assert pod["metadata"]["name"] == f"{name}-1"
        label = pod["metadata"]["labels"]["durapod.io/run"]
        assert len(label) <= 63 and label != name
        assert pod["metadata"]["annotations"]["durapod.io/run-name"] == name
