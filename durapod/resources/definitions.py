"""TaskDefinition manifests from ``@task`` functions: what ``durapod definitions`` prints.

The manifest holds what the code declares and nothing else, so the API server's defaults
(the CRD schema's) fill the rest, as for a hand-written one. It is validated against the
same models the CRDs are generated from, so what prints here the API server admits.

``payloadSchema`` is the JSON schema of the payload parameter's pydantic model
(``model_json_schema()``, JSON Schema 2020-12, ``$defs`` and ``$ref`` kept): the API checks
each triggered payload against it and refuses a bad one with 422 before a run exists.
The schema is as strict as JSON Schema reads it: ``"5"`` is not an integer there, while
pydantic in the pod would have coerced it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.errors import PydanticUserError

from durapod.durations import duration_string
from durapod.resources.models import API_VERSION, TaskDefinitionSpec
from durapod.runner.task import Task

#: The dialect of every generated payload schema (pydantic's, and the API's validator's).
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: The label on every generated TaskDefinition.
MANAGED_BY = {"app.kubernetes.io/managed-by": "durapod"}


class DefinitionError(ValueError):
    """A task's options or payload type cannot make a valid TaskDefinition."""


def payload_schema(task: Task[..., Any]) -> dict[str, Any] | None:
    """The JSON schema of the task's payload model, or None when it has none."""
    model = task.payload_type
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    try:
        schema = model.model_json_schema(mode="validation")
        json.dumps(schema, allow_nan=False)  # Infinity and NaN are not JSON
    except (PydanticUserError, ValueError, TypeError) as exc:
        raise DefinitionError(
            f"task {task.id}: the payload model {model.__qualname__} has no JSON schema: {exc}"
        ) from exc
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def spec(task: Task[..., Any], image: str, entrypoint: str) -> dict[str, Any]:
    """The TaskDefinition spec: the image and entrypoint, and the options the task sets."""
    fields: dict[str, Any] = {"image": image, "entrypoint": entrypoint}
    if task.machine is not None:
        fields["machine"] = task.machine
    if task.retry is not None:
        fields["retry"] = task.retry
    if task.max_duration is not None:
        fields["max_duration"] = duration_string(task.max_duration)
    if task.start_deadline is not None:
        fields["start_deadline"] = duration_string(task.start_deadline)
    if task.queue is not None:
        fields["queue"] = task.queue
    if task.ttl is not None:
        fields["ttl"] = duration_string(task.ttl)
    if (schema := payload_schema(task)) is not None:
        fields["payload_schema"] = schema
    try:
        model = TaskDefinitionSpec.model_validate(fields)
    except ValidationError as exc:
        raise DefinitionError(f"task {task.id}: {exc}") from exc
    dumped: dict[str, Any] = model.model_dump(
        by_alias=True, mode="json", exclude_unset=True, exclude_none=True
    )
    return dumped


def manifest(
    task: Task[..., Any], image: str, entrypoint: str, namespace: str | None = None
) -> dict[str, Any]:
    """The task's TaskDefinition; without a namespace it goes to the client's current one."""
    metadata: dict[str, Any] = {"name": task.id}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(MANAGED_BY)
    return {
        "apiVersion": API_VERSION,
        "kind": "TaskDefinition",
        "metadata": metadata,
        "spec": spec(task, image, entrypoint),
    }
