"""Logs: the JSON lines of the operator, the API and the runner (with the run they are
about), a failed attempt's traceback at the end of its pod's log, ``durapod runs get``
showing an error as text and ``durapod runs logs`` showing every pod's log of a run.

The formatter and the CLI's rendering are checked as tables; the rest against a real
``durapod dev`` (its pods' logs read with the real kubectl)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from durapod import logs
from durapod.api import kube, logs_routes
from durapod.cli import showing
from tests.helpers import DevProcess, definition, running_dev, taskrun, wait_for

# -- the formatter ---------------------------------------------------------------------

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _record(extra: dict[str, Any] | None = None, exc: bool = False) -> logging.LogRecord:
    """A record as ``logger.info("order %s", 7, extra=...)`` makes it."""
    exc_info = None
    if exc:
        try:
            raise KeyError("missing")
        except KeyError:
            exc_info = sys.exc_info()
    return logging.getLogger("durapod.test").makeRecord(
        "durapod.test", logging.INFO, __file__, 1, "order %s", (7,), exc_info, extra=extra
    )


class Opaque:
    def __str__(self) -> str:
        return "an opaque object"


@pytest.mark.parametrize(
    ("bound", "extra", "want"),
    [
        pytest.param({}, None, {}, id="a plain record has the core fields only"),
        pytest.param(
            {"run_id": "r-1", "attempt": 2},
            None,
            {"run_id": "r-1", "attempt": 2},
            id="fields bound where it was logged",
        ),
        pytest.param(
            {"run_id": "r-1"},
            {"order_id": 42, "run_id": "r-2"},
            {"run_id": "r-2", "order_id": 42},
            id="a call's extra fields, which win over bound ones",
        ),
        pytest.param(
            {"task": None},
            {"gone": None},
            {},
            id="None values are left out",
        ),
        pytest.param(
            {"level": "x"},
            {"component": "z"},
            {"level_": "x", "component_": "z"},
            id="a field named like a core one is renamed, never overwrites it",
        ),
        pytest.param(
            {},
            {
                "settings": object(),
                "k8s_skip": True,
                "k8s_ref": {"kind": "TaskRun", "name": "a", "namespace": "ns"},
            },
            {"object": {"kind": "TaskRun", "name": "a", "namespace": "ns"}},
            id="kopf's extra: the object kept, its settings and flags dropped",
        ),
        pytest.param(
            {}, {"color_message": "\x1b[32mhi"}, {}, id="uvicorn's coloured copy is dropped"
        ),
        pytest.param(
            {},
            {"big": "x" * (logs.MAX_CHARS + 10)},
            {"big": "x" * logs.MAX_CHARS + "…"},
            id="a long string is cut",
        ),
        pytest.param(
            {},
            {"many": list(range(logs.MAX_ITEMS + 3))},
            {"many": [*range(logs.MAX_ITEMS), "… 3 more"]},
            id="a long list is cut",
        ),
        pytest.param(
            {},
            {"deep": {"a": {"b": {"c": {"d": {"e": 1}}}}}},
            {"deep": {"a": {"b": {"c": {"d": "{'e': 1}"}}}}},
            id="deep nesting ends in a string",
        ),
        pytest.param(
            {},
            {"thing": Opaque(), "ratio": float("nan")},
            {"thing": "an opaque object", "ratio": "nan"},
            id="what JSON cannot hold is its str",
        ),
    ],
)
def test_json_lines(bound: dict[str, Any], extra: dict[str, Any] | None, want: Any) -> None:
    with logs.bind(**bound):
        line = logs.JsonFormatter("operator").format(_record(extra))
    assert "\n" not in line
    parsed = json.loads(line)
    core = {k: parsed.pop(k) for k in ("time", "level", "logger", "message", "component")}
    assert core["level"] == "info" and core["logger"] == "durapod.test"
    assert core["message"] == "order 7" and core["component"] == "operator"
    assert core["time"].endswith("Z") and core["time"][10] == "T"  # RFC 3339, UTC
    assert parsed == want


def test_an_exception_is_a_traceback_field_on_the_same_line() -> None:
    line = json.loads(logs.JsonFormatter("api").format(_record(exc=True)))
    assert line["traceback"].startswith("Traceback (most recent call last):")
    assert line["traceback"].splitlines()[-1] == "KeyError: 'missing'"


def test_text_lines_for_a_terminal() -> None:
    with logs.bind(run_id="r-1"):
        text = logs.TextFormatter("api").format(_record({"order_id": 42}, exc=True))
    first, *rest = text.splitlines()
    assert first.endswith('INFO durapod.test: order 7 [run_id="r-1" order_id=42]')
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "KeyError: 'missing'"


def test_binds_nest_and_end_with_their_block() -> None:
    with logs.bind(run_id="r-1", task="t"):
        with logs.bind(attempt=2, task="u"):
            assert logs.bound() == {"run_id": "r-1", "task": "u", "attempt": 2}
        assert logs.bound() == {"run_id": "r-1", "task": "t"}
    assert logs.bound() == {}


def test_the_task_logger_keeps_a_calls_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("runner"))
    logger = logging.getLogger("durapod.test.adapter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        adapter = logs.FieldsAdapter(logger, {"run_id": "r-1", "attempt": 1})
        adapter.warning("sent", extra={"order_id": 7, "attempt": 3})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = json.loads(stream.getvalue())
    assert (line["run_id"], line["attempt"], line["order_id"]) == ("r-1", 3, 7)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),  # W3C: lowercase hex only
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_trace_id_from_traceparent(value: str | None, want: str | None) -> None:
    assert logs.trace_id(value) == want


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root logger's handlers and level (and the quietened loggers'), put back after
    the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET}
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)
    logging.captureWarnings(False)


@pytest.mark.parametrize(
    ("form", "check"),
    [
        ("", lambda out: json.loads(out)["component"] == "runner"),
        ("json", lambda out: json.loads(out)["message"] == "hello"),
        ("text", lambda out: out.rstrip().endswith("INFO durapod.test: hello")),
    ],
)
def test_setup_follows_the_environment(
    root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch, form: str, check: Any
) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, form)
    monkeypatch.setenv(logs.LEVEL_ENV, "info")
    stream = io.StringIO()
    logs.setup("runner", stream)
    logs.setup("runner", stream)  # again: still one handler
    logging.getLogger("durapod.test").debug("below the level")
    logging.getLogger("httpx").info("a request")  # an HTTP client's chatter: warnings only
    logging.getLogger("durapod.test").info("hello")
    assert stream.getvalue().count("\n") == 1 and check(stream.getvalue())


def test_an_unknown_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="DURAPOD_LOG_FORMAT must be json or text"):
        logs.formatter("api")


# -- how the CLI shows errors and logs ---------------------------------------------------

TRACEBACK = 'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: bad\n'


@pytest.mark.parametrize(
    ("error", "want"),
    [
        (
            {"type": "ValueError", "message": "bad", "reason": "TaskError", "traceback": TRACEBACK},
            [
                "type: ValueError",
                "reason: TaskError",
                "message: bad",
                "traceback:",
                "  Traceback (most recent call last):",
                '    File "t.py", line 1',
                "  ValueError: bad",
            ],
        ),
        (
            {"type": "OOMKilled", "message": "killed", "retryable": True},
            ["type: OOMKilled", "message: killed", "retryable: True"],
        ),
    ],
)
def test_error_lines(error: dict[str, Any], want: list[str]) -> None:
    assert showing.error_lines(error) == want


@pytest.mark.parametrize(
    ("error", "want"),
    [
        (None, ""),
        ({"type": "ValueError", "message": "bad\nmore"}, "ValueError: bad"),
        ({"type": "Crashed", "message": ""}, "Crashed"),
    ],
)
def test_error_summary(error: dict[str, Any] | None, want: str) -> None:
    assert showing.error_summary(error) == want


POD = {"pod": "r-1", "attempt": 1, "startedAt": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("pod", "want"),
    [
        ({**POD, "startedAt": None}, "==> pod r-1 · attempt 1 · starting <=="),
        (POD, "==> pod r-1 · attempt 1 · running <=="),
        (
            {**POD, "outcome": "TaskError", "reason": "TaskError", "message": "ValueError: bad"},
            "==> pod r-1 · attempt 1 · TaskError (ValueError: bad) <==",
        ),
        (
            {**POD, "outcome": "Evicted", "note": "the pod was deleted: its log went with it"},
            "==> pod r-1 · attempt 1 · Evicted · the pod was deleted: its log went with it <==",
        ),
        (
            {**POD, "outcome": "Succeeded", "truncated": True},
            "==> pod r-1 · attempt 1 · Succeeded · its last lines only <==",
        ),
    ],
)
def test_pod_headers(pod: dict[str, Any], want: str) -> None:
    assert showing.header(pod) == want


@pytest.mark.parametrize(
    ("run", "want"),
    [
        (
            {"name": "r", "phase": "Queued", "message": "waiting for a slot", "pods": []},
            "run r is Queued (waiting for a slot): no pod yet\n",
        ),
        (
            {
                "name": "r",
                "phase": "Waiting",
                "message": "sleeping until noon",
                "pods": [{**POD, "outcome": "Suspended", "log": "one\ntwo"}],
            },
            "==> pod r-1 · attempt 1 · Suspended <==\none\ntwo\n"
            "run r is Waiting (sleeping until noon): no pod right now\n",
        ),
        (
            {"name": "r", "phase": "Running", "pods": [{**POD, "log": "up\n"}]},
            "==> pod r-1 · attempt 1 · running <==\nup\n",
        ),
        (
            {"name": "r", "phase": "Failed", "pods": [{**POD, "outcome": "Crashed", "log": ""}]},
            "==> pod r-1 · attempt 1 · Crashed <==\n",
        ),
    ],
)
def test_logs_text(run: dict[str, Any], want: str) -> None:
    assert showing.logs_text(run) == want


@pytest.mark.parametrize(
    ("data", "cut", "tail", "want"),
    [
        (b"a\nb\nc\n", False, 3, kube.LogEnd("a\nb\nc\n", False)),
        (b"a\nb\nc\n", False, 2, kube.LogEnd("b\nc\n", True)),
        (b"a\nb\nc", False, 2, kube.LogEnd("b\nc", True)),  # a last line still written
        (b"a\n\nc\n", False, 2, kube.LogEnd("\nc\n", True)),  # an empty line is a line
        (b"", False, 5, kube.LogEnd("", False)),
        # Bytes were dropped before: the first line is only its end, and goes.
        (b"rt of a line\nb\n", True, 5, kube.LogEnd("b\n", True)),
        # One line longer than the limit: its end is all there is.
        (b"xxxx\n", True, 5, kube.LogEnd("xxxx\n", True)),
        (b"\x80\xe2\x82\xac\n", False, 5, kube.LogEnd("\ufffd\u20ac\n", False)),
    ],
)
def test_the_end_of_a_log(data: bytes, cut: bool, tail: int, want: kube.LogEnd) -> None:
    assert kube.log_end(data, cut, tail) == want


def test_only_the_last_bytes_of_a_streamed_log_are_kept() -> None:
    kept = kube._Kept(10)
    for chunk in (b"0123456", b"789ab", b"cdefg", b"h"):
        kept.add(chunk)
        assert kept.size - len(kept._chunks[0]) < 10  # never a chunk more than needed
    assert kept.data() == b"89abcdefgh" and kept.cut
    whole = kube._Kept(10)
    whole.add(b"short")
    assert (whole.data(), whole.cut) == (b"short", False)


# -- against durapod dev -----------------------------------------------------------------

FAIL_ONCE = "fail-once-1"
FAIL_TWICE = "fail-twice-1"
NAPPING = "napping-1"
CHATTY = "chatty-1"


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-logs-") as process:
        process.apply(
            definition("fail-once", "tests.log_tasks:fail_loudly", retry={"maxAttempts": 1}),
            definition(
                "fail-twice",
                "tests.log_tasks:fail_loudly",
                retry={"maxAttempts": 2, "minDelay": "1s", "jitter": False},
            ),
            definition("nap", "tests.log_tasks:nap"),
            definition("chatty", "tests.log_tasks:chatty"),
            taskrun(FAIL_ONCE, "fail-once", {"order": 7}),
            taskrun(FAIL_TWICE, "fail-twice", {"order": 8}),
            taskrun(NAPPING, "nap", {"order": 9}),
            taskrun(CHATTY, "chatty", {"bytes": logs_routes.MAX_POD_LOG_BYTES + 1024 * 1024}),
        )
        yield process


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_failed_runs_kubectl_logs_end_with_its_traceback(dev: DevProcess) -> None:
    run = dev.wait_phase(FAIL_ONCE, "Failed")
    pod = run["status"]["podName"]
    lines = dev.kubectl("logs", pod).stdout.rstrip("\n").splitlines()
    # As Python prints an uncaught exception: the traceback, the exception line last.
    assert lines[-1] == "ValueError: order 7 is invalid (attempt 1)"
    start = lines.index("Traceback (most recent call last):")
    assert any("in _check" in line for line in lines[start:])
    assert "printed by attempt 1" in lines[:start]
    # Before it, the runner's JSON lines, with the run they are about.
    records = _json_lines("\n".join(lines[:start]))
    assert records and all(r["component"] == "runner" for r in records)
    run_fields = {"run_id": run["metadata"]["uid"], "task": "fail-once", "attempt": 1}
    assert all(r.items() >= run_fields.items() for r in records), records
    [task_line] = [r for r in records if r["logger"] == "durapod.task"]
    assert task_line["message"] == "checking order" and task_line["order_id"] == 7
    [error_line] = [r for r in records if r["level"] == "error"]
    assert error_line["message"] == "ValueError: order 7 is invalid (attempt 1)"
    assert error_line["reason"] == "TaskError"


def test_runs_get_shows_the_error_and_its_traceback_as_text(dev: DevProcess) -> None:
    dev.wait_phase(FAIL_ONCE, "Failed")
    shown = dev.durapod("runs", "get", FAIL_ONCE)
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    start = lines.index("traceback:")
    assert lines[start - 3 : start] == [
        "type: ValueError",
        "reason: TaskError",
        "message: order 7 is invalid (attempt 1)",
    ]
    assert lines[start + 1] == "Traceback (most recent call last):"
    assert "ValueError: order 7 is invalid (attempt 1)" in lines[start + 2 :]
    assert "\\n" not in shown.stdout  # no escaped JSON string
    # The attempts table says how each ended, in a word and a line.
    [row] = [line for line in lines if f" {FAIL_ONCE}-1 " in line]
    assert "TaskError" in row and "ValueError: order 7 is invalid (attempt 1)" in row


def test_runs_logs_shows_each_attempt_in_order(dev: DevProcess) -> None:
    dev.wait_phase(FAIL_TWICE, "Failed", timeout=90)
    shown = dev.durapod("runs", "logs", FAIL_TWICE)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    marks = [
        f"==> pod {FAIL_TWICE}-1 · attempt 1 · TaskError (ValueError: order 8 is invalid "
        "(attempt 1)) <==",
        "printed by attempt 1",
        "ValueError: order 8 is invalid (attempt 1)\n",
        f"==> pod {FAIL_TWICE}-2 · attempt 2 · TaskError (ValueError: order 8 is invalid "
        "(attempt 2)) <==",
        "printed by attempt 2",
        "ValueError: order 8 is invalid (attempt 2)\n",
    ]
    places = [out.find(mark) for mark in marks]
    assert -1 not in places and places == sorted(places), out
    assert out.endswith(marks[-1])  # finished: nothing is said of a pod to come
    only = dev.durapod("runs", "logs", FAIL_TWICE, "--attempt", "2").stdout
    assert marks[3] in only and "attempt 1" not in only
    # A pod that is gone is listed, with its log said to be gone.
    dev.kubectl("delete", "pod", f"{FAIL_TWICE}-1")
    after = dev.durapod("runs", "logs", FAIL_TWICE).stdout
    assert "the pod was deleted: its log went with it <==" in after.splitlines()[0]
    assert "printed by attempt 1" not in after and "printed by attempt 2" in after


def _run_logs(dev: DevProcess, name: str, **params: int) -> dict[str, Any]:
    env = dev.env()
    answer = httpx.get(
        f"{env['DURAPOD_API_URL']}/v1/namespaces/default/runs/{name}/logs",
        params=params,
        headers={"Authorization": f"Bearer {env['DURAPOD_TOKEN']}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_a_log_is_cut_only_when_it_has_more_lines_than_asked(dev: DevProcess) -> None:
    dev.wait_phase(FAIL_ONCE, "Failed")
    [whole] = _run_logs(dev, FAIL_ONCE)["pods"]
    lines = whole["log"].count("\n")
    assert lines > 3 and whole["log"].endswith("\n") and not whole["truncated"]
    [exact] = _run_logs(dev, FAIL_ONCE, tail=lines)["pods"]
    assert (exact["log"], exact["truncated"]) == (whole["log"], False)
    [fewer] = _run_logs(dev, FAIL_ONCE, tail=lines - 1)["pods"]
    assert (fewer["log"], fewer["truncated"]) == (whole["log"].split("\n", 1)[1], True)


def test_a_huge_log_is_answered_by_its_end_within_the_byte_limit(dev: DevProcess) -> None:
    dev.wait_phase(CHATTY, "Succeeded")
    [pod] = _run_logs(dev, CHATTY)["pods"]
    assert pod["truncated"] is True
    assert len(pod["log"].encode()) <= logs_routes.MAX_POD_LOG_BYTES
    assert "the last line\n" in pod["log"][-1024:]  # the end, where a run's story ends


def test_runs_logs_of_a_waiting_run_shows_its_pod_and_says_it_waits(dev: DevProcess) -> None:
    dev.wait_phase(NAPPING, "Waiting")
    shown = dev.durapod("runs", "logs", NAPPING)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"==> pod {NAPPING}-1 · attempt 1 · Suspended (sleeping until ")
    records = _json_lines(shown.stdout)
    assert any(r["message"] == "before the nap" and r["order_id"] == 9 for r in records)
    assert any(r["message"].startswith("waiting durably") and r["until"] for r in records)
    assert lines[-1].startswith(f"run {NAPPING} is Waiting (sleeping until ")
    assert lines[-1].endswith("): no pod right now")
    # The pod that exited to sleep is kept (for its log); it goes with its TaskRun.
    pod = dev.get(f"/api/v1/namespaces/default/pods/{NAPPING}-1")
    assert pod is not None and pod["status"]["phase"] == "Succeeded"
    dev.kubectl("delete", "tr", NAPPING)
    wait_for(lambda: dev.pods_of(NAPPING) == [], 60, "the pod to be collected with its run")


def test_the_operator_and_api_log_json_lines_with_the_run(dev: DevProcess) -> None:
    run = dev.wait_phase(FAIL_ONCE, "Failed")
    uid = run["metadata"]["uid"]
    found: dict[str, list[dict[str, Any]]] = {}
    for component in ("operator", "api"):
        path: Path = dev.home / "logs" / f"{component}.log"
        text = path.read_text()
        # Every line is JSON, but the API's own line saying where it listens.
        others = [
            line
            for line in text.splitlines()
            if not line.startswith("{") and not line.startswith("durapod api listening on ")
        ]
        assert not others, others
        found[component] = records = _json_lines(text)
        assert records and all(r["component"] == component for r in records)
    # A line per transition (its Event), with the run it is about.
    fields = {"run": FAIL_ONCE, "run_id": uid, "task": "fail-once", "namespace": "default"}
    reconciled = [r for r in found["operator"] if r.get("run") == FAIL_ONCE]
    assert reconciled and all(r.items() >= fields.items() for r in reconciled), reconciled
    [failed] = [r for r in reconciled if r["message"].startswith("Failed: ")]
    assert failed["level"] == "warning" and failed["attempt"] == 1
    reported = [r for r in found["api"] if r.get("run_id") == uid]
    assert any(r["message"] == "pod 1 reported error" for r in reported), found["api"]
