"""Turning trigger requests into TaskRuns, with idempotency keys and payload checks."""

from __future__ import annotations

import asyncio
import json
import secrets
import string
from typing import Any

import jsonschema

from durapod.api.models import RunRef, TriggerRequest
from durapod.api.problems import Problem
from durapod.durations import parse_duration
from durapod.resources.models import DEFAULT_KEY_TTL, MAX_PAYLOAD_BYTES
from durapod.store import idempotency

_ALPHABET = string.ascii_lowercase + string.digits
Obj = dict[str, Any]


def new_name(task: str) -> str:
    """A fresh TaskRun name, chosen here so an idempotency key can name it first."""
    return f"{task[:50]}-{''.join(secrets.choice(_ALPHABET) for _ in range(10))}"


def ref(run: Obj, duplicate: bool = False) -> RunRef:
    meta = run["metadata"]
    return RunRef(
        id=meta.get("uid"),
        name=meta["name"],
        namespace=meta["namespace"],
        task=run["spec"]["task"],
        phase=(run.get("status") or {}).get("phase"),
        duplicate=duplicate,
    )


class Triggers:
    def __init__(self, pool: Any, kube: Any) -> None:
        self.pool = pool
        self.kube = kube

    async def definition(self, namespace: str, task: str) -> Obj:
        found: Obj | None = await self.kube.get_taskdefinition(namespace, task)
        if found is None:
            raise Problem(
                404, "Not Found", f'TaskDefinition "{task}" not found in namespace "{namespace}"'
            )
        return found

    @staticmethod
    def check(definition: Obj, task: str, request: TriggerRequest) -> None:
        """Refuse what can never run: a payload too big or off the task's schema."""
        size = len(json.dumps(request.payload, separators=(",", ":")))
        if size > MAX_PAYLOAD_BYTES:
            raise Problem(
                413,
                "Content Too Large",
                f"payload is {size} bytes, over the limit of {MAX_PAYLOAD_BYTES} bytes",
            )
        schema = definition["spec"].get("payloadSchema")
        if schema:
            try:
                jsonschema.validate(request.payload, schema)
            except jsonschema.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
                raise Problem(
                    422,
                    "Unprocessable Content",
                    f"payload does not match the schema of task {task} at {where}: {exc.message}",
                ) from exc

    def _key_request(
        self, namespace: str, task: str, request: TriggerRequest, name: str
    ) -> idempotency.Request | None:
        if request.idempotency_key is None:
            return None
        ttl = parse_duration(request.idempotency_key_ttl or DEFAULT_KEY_TTL)
        return idempotency.Request(
            namespace, task, request.idempotency_key, name, ttl, request.spec(task)
        )

    async def _materialise(
        self, namespace: str, name: str, spec: Obj, claim: idempotency.Claim | None
    ) -> RunRef:
        if claim is not None and not claim.ours:
            # The key's run: create it from the stored spec if its trigger died before.
            run = await self.kube.get_taskrun(namespace, claim.run_name)
            if run is None and claim.spec is not None:
                run, _ = await self.kube.create_taskrun(namespace, claim.run_name, claim.spec)
            if run is None:
                raise Problem(
                    409,
                    "Conflict",
                    f"the idempotency key belongs to run {claim.run_name}, which no longer exists",
                )
            return ref(run, duplicate=True)
        run, _ = await self.kube.create_taskrun(namespace, name, spec)
        return ref(run)

    async def trigger(self, namespace: str, task: str, request: TriggerRequest) -> RunRef:
        self.check(await self.definition(namespace, task), task, request)
        name = new_name(task)
        key = self._key_request(namespace, task, request, name)
        claim = await idempotency.claim(self.pool, key) if key else None
        return await self._materialise(namespace, name, request.spec(task), claim)

    async def batch(self, namespace: str, items: list[tuple[str, TriggerRequest]]) -> list[RunRef]:
        """Check all, claim every key in one transaction, then create the runs."""
        definitions = {
            task: await self.definition(namespace, task)
            for task in sorted({task for task, _ in items})
        }
        for task, request in items:
            self.check(definitions[task], task, request)
        names = [new_name(task) for task, _ in items]
        keys = [
            self._key_request(namespace, task, request, name)
            for (task, request), name in zip(items, names, strict=True)
        ]
        wanted = [k for k in keys if k is not None]
        claimed = iter(await idempotency.claim_many(self.pool, wanted) if wanted else [])
        claims = [next(claimed) if k is not None else None for k in keys]
        limit = asyncio.Semaphore(20)

        async def one(i: int) -> RunRef:
            async with limit:
                task, request = items[i]
                return await self._materialise(namespace, names[i], request.spec(task), claims[i])

        return list(await asyncio.gather(*(one(i) for i in range(len(items)))))
