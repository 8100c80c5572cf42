"""``durapod trigger`` and ``durapod runs ...``: runs from a terminal, through the API.

Reads ``DURAPOD_API_URL`` and ``DURAPOD_TOKEN`` (``source .durapod/env`` after
``durapod dev``). Tables for people, ``-o json`` for scripts.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from durapod.cli import showing
from durapod.client import ApiError, Client, Run

runs_app = typer.Typer(help="List, inspect, cancel and replay runs.", no_args_is_help=True)
console = Console(highlight=False)
errors = Console(highlight=False, stderr=True)


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


Namespace = Annotated[str, typer.Option("--namespace", "-n", help="The runs' namespace.")]
OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table or json")]


def _client(namespace: str) -> Client:
    try:
        return Client(namespace=namespace)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} (source .durapod/env after durapod dev)") from exc


def _fail(exc: ApiError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {exc.detail} ({exc.status})")
    return typer.Exit(1)


def _show(run: Run, output: Output) -> None:
    if output == Output.JSON:
        typer.echo(json.dumps(run.raw, indent=2, default=str))
        return
    table = Table(show_header=False, box=None)
    for key, value in run.raw.items():
        if key in ("attempts", "checkpoints", "error") or value in (None, [], {}):
            continue
        table.add_row(key, Text(value if isinstance(value, str) else json.dumps(value)))
    console.print(table)
    if run.error:
        # As text, lines and all: a traceback read as Python printed it.
        console.print("error", style="bold red")
        typer.echo("".join(f"  {line}\n" for line in showing.error_lines(run.error)), nl=False)
    attempts = [
        {**row, "error": showing.error_summary(row.get("error"))}
        for row in run.raw.get("attempts") or []
    ]
    for title, rows, cols in (
        ("attempts", attempts, ("pod", "attempt", "machine", "outcome", "error")),
        ("checkpoints", run.raw.get("checkpoints") or [], ("step", "seq", "createdAt")),
    ):
        if rows:
            sub = Table(*cols, title=title, title_justify="left")
            for row in rows:
                sub.add_row(*(Text(str(row.get(c) or "")) for c in cols))
            console.print(sub)


def trigger(
    task: Annotated[str, typer.Argument(help="The TaskDefinition's name.")],
    namespace: Namespace = "default",
    payload: Annotated[str, typer.Option(help="The payload, as JSON.")] = "{}",
    idempotency_key: Annotated[str | None, typer.Option(help="Trigger at most once.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeatable).")] = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Trigger a run of TASK; prints the run (its name too)."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--payload is not JSON: {exc}") from exc
    with _client(namespace) as client:
        try:
            run = client.trigger(task, body, idempotency_key=idempotency_key, tags=tag)
        except ApiError as exc:
            raise _fail(exc) from exc
    _show(run, output)


@runs_app.command("list")
def list_runs(
    namespace: Namespace = "default",
    task: Annotated[str | None, typer.Option(help="Only this task's runs.")] = None,
    phase: Annotated[str | None, typer.Option(help="Only runs in this phase.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only runs with this tag.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    output: OutputOption = Output.TABLE,
) -> None:
    """Runs, newest first."""
    with _client(namespace) as client:
        try:
            page = client.list(task=task, phase=phase, tag=tag, limit=limit)
        except ApiError as exc:
            raise _fail(exc) from exc
    if output == Output.JSON:
        typer.echo(json.dumps(page["runs"], indent=2))
        return
    table = Table("NAME", "TASK", "PHASE", "ATTEMPT", "CREATED", "TAGS")
    for run in page["runs"]:
        table.add_row(
            run["name"],
            run["task"],
            run["phase"],
            str(run["attempt"]),
            run["createdAt"],
            ",".join(run["tags"]),
        )
    console.print(table)


def _one(action: str, name: str, namespace: str, output: Output) -> None:
    with _client(namespace) as client:
        try:
            run: Run = getattr(client, action)(name)
        except ApiError as exc:
            raise _fail(exc) from exc
    _show(run, output)


@runs_app.command("get")
def get_run(
    name: str, namespace: Namespace = "default", output: OutputOption = Output.TABLE
) -> None:
    """A run: status, output or error, attempts and checkpoints."""
    _one("get", name, namespace, output)


@runs_app.command("cancel")
def cancel_run(
    name: str, namespace: Namespace = "default", output: OutputOption = Output.TABLE
) -> None:
    """Cancel a run (its pod is terminated gracefully)."""
    _one("cancel", name, namespace, output)


@runs_app.command("replay")
def replay_run(
    name: str, namespace: Namespace = "default", output: OutputOption = Output.TABLE
) -> None:
    """Run the same task with the same payload again."""
    _one("replay", name, namespace, output)


@runs_app.command("logs")
def run_logs(
    name: str,
    namespace: Namespace = "default",
    attempt: Annotated[int | None, typer.Option(help="Only this attempt's pods.", min=1)] = None,
    tail: Annotated[
        int | None, typer.Option(help="The last lines of each pod's log.", min=1)
    ] = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Every pod's log of the run, in order (one pod per attempt or resume), each under a
    header: the pod, its attempt, how it ended. A run without a pod now (Waiting, say)
    shows its earlier pods and says so."""
    with _client(namespace) as client:
        try:
            found = client.logs(name, attempt=attempt, tail=tail)
        except ApiError as exc:
            raise _fail(exc) from exc
    if output == Output.JSON:
        typer.echo(json.dumps(found, indent=2))
        return
    typer.echo(showing.logs_text(found), nl=False)


def queues(namespace: Namespace = "default", output: OutputOption = Output.TABLE) -> None:
    """Queues: their limits, runs holding a slot, runs waiting."""
    with _client(namespace) as client:
        try:
            found = client.queues()
        except ApiError as exc:
            raise _fail(exc) from exc
    if output == Output.JSON:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("QUEUE", "LIMIT", "KEY LIMIT", "RUNNING", "WAITING")
    for q in found:
        table.add_row(
            q["name"],
            str(q["concurrencyLimit"] or "-"),
            str(q["concurrencyKeyLimit"] or "-"),
            str(q["running"]),
            str(q["waiting"]),
        )
    console.print(table)
