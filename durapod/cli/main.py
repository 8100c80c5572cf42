"""``durapod``: the command line (typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from durapod.cli import definitions, runs
from durapod.resources import crds as crd_gen

app = typer.Typer(
    help="durapod: durable background tasks for Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
)

app.command("trigger")(runs.trigger)
app.command("queues")(runs.queues)
app.command("definitions")(definitions.definitions)
app.add_typer(runs.runs_app, name="runs")


@app.command()
def crds(
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-d", help="Write one file per CRD here instead of printing."),
    ] = None,
) -> None:
    """Print the CustomResourceDefinitions (generated from the pydantic models)."""
    if output_dir is not None:
        for path in crd_gen.write(output_dir):
            typer.echo(f"wrote {path}")
        return
    typer.echo("---\n".join(crd_gen.render(m) for m in crd_gen.all_crds()), nl=False)


@app.command()
def dev(
    home: Annotated[Path, typer.Option(help="Where state, logs, kubeconfig and env go.")] = Path(
        ".durapod"
    ),
    demo: Annotated[bool, typer.Option(help="Apply examples/hello/ and show it succeed.")] = False,
    operators: Annotated[int, typer.Option(min=1, max=5, help="Operator replicas.")] = 1,
    apis: Annotated[int, typer.Option(min=1, max=5, help="API replicas.")] = 1,
    node_cpu: Annotated[
        str,
        typer.Option(
            help="CPUs the local node offers pods. CPU is not limited here, so this only "
            "paces how many pods run at once."
        ),
    ] = "16",
    node_memory: Annotated[
        str | None,
        typer.Option(help="Memory the local node offers pods, e.g. 8Gi (default: this machine's)."),
    ] = None,
    tasks: Annotated[
        list[Path] | None,
        typer.Option(
            "--tasks",
            help="A directory of task code, put first on the task pods' PYTHONPATH "
            "(repeatable; the current directory always is on it).",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ] = None,
    install: Annotated[
        str | None,
        typer.Option(
            "--install",
            help="`helm`: install helm/durapod on the local cluster with the real Helm and run "
            "the operator and the API as the chart's pods (--operators/--apis are its "
            "replicas), instead of as processes of their own.",
        ),
    ] = None,
) -> None:
    """Run durapod on this machine: PostgreSQL, a local cluster, the operator and the API."""
    from durapod.cli import devcommand  # the only importer of durapod.dev outside tests

    if install not in (None, "helm"):
        raise typer.BadParameter(
            f"{install!r}: the only way to install is `helm`", param_hint="--install"
        )
    capacity = {"cpu": node_cpu, **({"memory": node_memory} if node_memory else {})}
    raise typer.Exit(
        devcommand.run(
            home.resolve(), demo, operators, apis, capacity, tuple(tasks or ()), install or ""
        )
    )


def main() -> None:
    app()
