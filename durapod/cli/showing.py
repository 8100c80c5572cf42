"""How ``durapod runs`` shows errors and logs to a person: plain text lines, pure functions.

An error is its type, reason and message on lines of their own and its traceback as
Python printed it (never one escaped JSON string); a run's logs are each pod's log under
a header naming the pod, its attempt and how it ended.
"""

from __future__ import annotations

from typing import Any

from durapod.resources.models import FINISHED_PHASES


def error_lines(error: dict[str, Any]) -> list[str]:
    """A run's (or attempt's) error: its fields, then the traceback, indented."""
    lines = [f"{key}: {error[key]}" for key in ("type", "reason", "message") if error.get(key)]
    known = {"type", "reason", "message", "traceback"}
    lines += [f"{key}: {value}" for key, value in error.items() if key not in known]
    if error.get("traceback"):
        lines.append("traceback:")
        lines += [f"  {line}" for line in str(error["traceback"]).rstrip("\n").splitlines()]
    return lines


def error_summary(error: dict[str, Any] | None) -> str:
    """An error on one line (``Type: message``), for a table cell."""
    if not error:
        return ""
    lines = str(error.get("message") or "").strip().splitlines()
    kind = error.get("type") or "Error"
    return f"{kind}: {lines[0]}" if lines else str(kind)


def pod_state(pod: dict[str, Any]) -> str:
    """How a pod of a run ended, or where it is: its outcome and why."""
    state = pod.get("outcome") or ("running" if pod.get("startedAt") else "starting")
    why = pod.get("message") or pod.get("reason")
    return f"{state} ({why})" if why else state


def header(pod: dict[str, Any]) -> str:
    """The line above a pod's log."""
    parts = [f"pod {pod['pod']}", f"attempt {pod['attempt']}", pod_state(pod)]
    if pod.get("note"):
        parts.append(pod["note"])
    elif pod.get("truncated"):
        parts.append("its last lines only")
    return "==> " + " · ".join(parts) + " <=="


def logs_text(logs: dict[str, Any]) -> str:
    """A run's logs: each pod's under its header, in order; then, when the run holds no
    pod now (Waiting, Retrying, Queued), a line saying so."""
    out: list[str] = []
    pods: list[dict[str, Any]] = logs.get("pods") or []
    for pod in pods:
        out.append(header(pod) + "\n")
        text = pod.get("log")
        if text:
            out.append(text if text.endswith("\n") else text + "\n")
    phase = logs.get("phase") or ""
    if phase not in FINISHED_PHASES and (not pods or pods[-1].get("outcome")):
        why = f" ({logs['message']})" if logs.get("message") else ""
        had = "no pod right now" if pods else "no pod yet"
        out.append(f"run {logs['name']} is {phase}{why}: {had}\n")
    return "".join(out)
