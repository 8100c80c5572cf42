"""``durapod definitions``: the TaskDefinitions of a code base's ``@task`` functions.

Imports the modules it is given (the current directory first on ``sys.path``, as
``python -m`` does; a package is walked, submodules included), finds every :class:`Task`
bound to a module attribute, and prints one TaskDefinition per task (see
:mod:`durapod.resources.definitions`), or applies them.

``--apply`` is a server-side apply through lightkube, with the field manager ``durapod``
and ``force``: the code owns the fields it declares, and a field dropped from the
decorator is dropped from the object on the next apply. It is idempotent, and says per
object, as ``kubectl apply`` does, whether it was ``created``, ``configured`` or
``unchanged`` (the resourceVersion does not move when nothing changed).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
import yaml

from durapod.resources import definitions as generate
from durapod.resources.models import GROUP
from durapod.runner.task import Task

#: The field manager of ``--apply``.
FIELD_MANAGER = "durapod"


class Format(StrEnum):
    YAML = "yaml"
    JSON = "json"


@dataclass(frozen=True)
class Found:
    """A task and the entrypoint the runner loads it by (``module:attribute``)."""

    entrypoint: str
    task: Task[..., Any]


class DiscoveryError(Exception):
    """A module cannot be imported, or its tasks cannot make TaskDefinitions."""


def module_name(arg: str) -> str:
    """``tasks.orders``, or a path under the current directory: ``tasks/orders.py``, ``tasks/``."""
    if not (arg.endswith(".py") or "/" in arg):
        return arg
    path = Path(arg).resolve()
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError as exc:
        raise DiscoveryError(f"{arg} is not under the current directory") from exc
    parts = relative.with_suffix("").parts if path.suffix == ".py" else relative.parts
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc)).rstrip()
        raise DiscoveryError(f"cannot import {name}:\n{detail}") from exc


def _modules(name: str) -> Iterator[ModuleType]:
    """The module, and every submodule when it is a package."""
    module = _import(name)
    yield module
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{name}."):
            yield _import(info.name)


def _home(task: Task[..., Any]) -> str | None:
    """``module:name`` where the task is defined, if it is bound there under its name."""
    module, name = getattr(task, "__module__", None), getattr(task, "__name__", None)
    if module and name and getattr(sys.modules.get(module), name, None) is task:
        return f"{module}:{name}"
    return None


def find_tasks(modules: Sequence[str]) -> list[Found]:
    """Every task bound in the modules (and their submodules), sorted by id."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    found: dict[str, Found] = {}
    for arg in modules:
        for module in _modules(module_name(arg)):
            for attr, value in sorted(vars(module).items()):
                if not isinstance(value, Task):
                    continue
                entry = Found(_home(value) or f"{module.__name__}:{attr}", value)
                other = found.get(value.id)
                if other is not None and other.task is not value:
                    raise DiscoveryError(
                        f"two tasks are named {value.id!r}: {other.entrypoint} and "
                        f"{entry.entrypoint}"
                    )
                found.setdefault(value.id, entry)
    return [found[key] for key in sorted(found)]


def manifests(found: Sequence[Found], image: str, namespace: str | None) -> list[dict[str, Any]]:
    try:
        return [generate.manifest(f.task, image, f.entrypoint, namespace) for f in found]
    except generate.DefinitionError as exc:
        raise DiscoveryError(str(exc)) from exc


def render(docs: Sequence[dict[str, Any]], output: Format) -> str:
    """YAML documents, or one JSON ``List``; both are what ``kubectl apply -f`` reads."""
    if output == Format.JSON:
        listing = {"apiVersion": "v1", "kind": "List", "items": list(docs)}
        return json.dumps(listing, indent=2) + "\n"
    return "---\n".join(yaml.safe_dump(doc, sort_keys=False, width=100) for doc in docs)


def apply(docs: Sequence[dict[str, Any]], namespace: str | None) -> list[str]:
    """Server-side apply each TaskDefinition; ``kind/name created|configured|unchanged``."""
    try:
        from lightkube import Client
        from lightkube.core.exceptions import ApiError, ConfigError

        from durapod.kubeclient import TaskDefinitionResource
    except ImportError as exc:  # lightkube is not in the light SDK
        raise DiscoveryError(
            f"--apply needs lightkube: pip install 'durapod[cli]' ({exc})"
        ) from exc
    try:
        client = Client(namespace=namespace, field_manager=FIELD_MANAGER)
    except ConfigError as exc:
        raise DiscoveryError(f"no cluster to apply to: {exc}") from exc
    report = []
    for doc in docs:
        name = doc["metadata"]["name"]
        where = namespace or client.namespace
        try:
            before = client.get(TaskDefinitionResource, name, namespace=where)
            version = before.metadata.resourceVersion if before.metadata else None
        except ApiError as exc:
            if exc.status.code != 404:
                raise DiscoveryError(f"cannot read TaskDefinition {name}: {exc}") from exc
            version = None
        try:
            obj = {**doc, "metadata": {**doc["metadata"], "namespace": where}}
            after = client.apply(TaskDefinitionResource.from_dict(obj), force=True)
        except ApiError as exc:
            raise DiscoveryError(f"TaskDefinition {name} was refused: {exc}") from exc
        now = after.metadata.resourceVersion if after.metadata else None
        verb = "created" if version is None else "unchanged" if now == version else "configured"
        report.append(f"taskdefinition.{GROUP}/{name} {verb}")
    return report


def definitions(
    modules: Annotated[
        list[str],
        typer.Argument(
            help="Modules holding @task functions: tasks.orders, tasks/orders.py, or a "
            "package (walked, submodules included). The current directory is on sys.path.",
            show_default=False,
        ),
    ],
    image: Annotated[
        str, typer.Option(help="The image holding the code (each TaskDefinition's image).")
    ],
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", help="Their namespace (default: the kubeconfig's current one)."
        ),
    ] = None,
    do_apply: Annotated[
        bool,
        typer.Option(
            "--apply", help="Apply them to the cluster (server-side apply) instead of printing."
        ),
    ] = False,
    output: Annotated[Format, typer.Option("--output", "-o", help="yaml or json.")] = Format.YAML,
) -> None:
    """Print (or --apply) the TaskDefinitions of every @task in MODULES."""
    try:
        docs = manifests(find_tasks(modules), image, namespace)
        if not docs:
            raise DiscoveryError(f"no @task found in {', '.join(modules)}")
        if do_apply:
            for line in apply(docs, namespace):
                typer.echo(line)
        else:
            typer.echo(render(docs, output), nl=False)
    except DiscoveryError as exc:
        typer.echo(f"durapod definitions: {exc}", err=True)
        raise typer.Exit(1) from exc
