"""A container's environment as the kubelet makes it, and the downward API's values.

Follows ``makeEnvironmentVariables`` (pkg/kubelet/kubelet_pods.go) in
kubernetes/kubernetes: ``envFrom`` first (ConfigMaps and Secrets, each key with the
source's ``prefix``), then ``env`` in order, each ``value`` with ``$(VAR)`` references
expanded against what came before, each ``valueFrom`` read (``fieldRef``,
``resourceFieldRef``, ``configMapKeyRef``, ``secretKeyRef``); then the service variables
of the API server (``KUBERNETES_SERVICE_HOST`` and friends) where the container set none.
A missing ConfigMap, Secret or key that is not ``optional`` is a :class:`ConfigError`
with the kubelet's words (``secret "db" not found``): the container waits in
``CreateContainerConfigError``. ``command`` and ``args`` are expanded against the result
(``ExpandContainerCommandAndArgs``).

There is no service network here: the API server's variables name the address it
really listens on (HTTPS on loopback), not a service IP.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from durapod.dev.apiserver import pods

Obj = dict[str, Any]
#: Reads one object (``plural``, ``namespace``, ``name``); None when it does not exist.
Reader = Callable[[str, str, str], Awaitable[Obj | None]]
_INDEXED = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


class ConfigError(Exception):
    """The container's configuration cannot be made (a missing Secret, say)."""


# -- the downward API -------------------------------------------------------------------


def field_value(pod: Obj, path: str) -> str:
    """A ``fieldRef``'s value (podFieldSelectorRuntimeValue, ExtractFieldPathAsString)."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    if indexed := _INDEXED.match(path):
        return str((meta.get(indexed.group(1)) or {}).get(indexed.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        found = meta.get(path.split(".", 1)[1]) or {}
        # FormatMap: sorted key="value" lines, values quoted as Go's %q quotes them.
        return "\n".join(f"{k}={json.dumps(found[k], ensure_ascii=False)}" for k in sorted(found))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(a["ip"] for a in status.get("hostIPs") or []),
        "status.podIPs": ",".join(a["ip"] for a in status.get("podIPs") or []),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldPath: {path}")
    return str(simple[path] or "")


def resource_value(pod: Obj, ref: Obj, container_name: str, allocatable: Mapping[str, Any]) -> str:
    """A ``resourceFieldRef``'s value: the container's request or limit divided by the
    divisor, rounded up; a limit not set is the node's allocatable, as the kubelet
    defaults it for the downward API."""
    name = ref.get("containerName") or container_name
    containers = [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
    found = next((c for c in containers if c["name"] == name), None)
    if found is None:
        raise ConfigError(f"container {name} not found")
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    if kind not in ("limits", "requests") or not resource:
        raise ConfigError(f"unsupported container resource: {ref.get('resource')}")
    given = (found.get("resources") or {}).get(kind) or {}
    amount = pods.quantity(given[resource]) if resource in given else None
    if amount is None and kind == "limits":
        amount = pods.quantity(allocatable.get(resource, 0))
    divisor = pods.quantity(ref.get("divisor") or "1") or Fraction(1)
    if resource == "cpu":
        # convertResourceCPUToString: millicores over the divisor's millicores.
        return str(math.ceil(math.ceil((amount or 0) * 1000) / math.ceil(divisor * 1000)))
    return str(math.ceil(math.ceil(amount or 0) / divisor))


# -- $(VAR) -----------------------------------------------------------------------------


def expand(text: str, *contexts: Mapping[str, str]) -> str:
    """``third_party/forked/golang/expansion``: ``$(NAME)`` becomes the first context's
    value of NAME (left as it is when none has it); ``$$`` is a literal ``$``."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(" and (close := rest.find(")", 1)) != -1:
                name = rest[1:close]
                found = next((c[name] for c in contexts if name in c), None)
                out.append(f"$({name})" if found is None else found)
                advance = close + 1
            elif rest[0] == "(":
                out.append("$(")
                advance = 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def command(container: Obj, env: Mapping[str, str]) -> list[str]:
    """The container's ``command`` and ``args``, each expanded against its environment."""
    parts = [*(container.get("command") or []), *(container.get("args") or [])]
    return [expand(str(p), env) for p in parts]


# -- the environment --------------------------------------------------------------------


def image_variables(bin_dir: Path, python_path: Sequence[Path], hostname: str) -> dict[str, str]:
    """What the image's environment gives every container: the environment's ``bin_dir``
    first on PATH, ``python_path`` as PYTHONPATH, the pod's name as HOSTNAME."""
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(map(str, python_path)),
        "PYTHONUNBUFFERED": "1",
        "HOSTNAME": hostname,
    }


def placed(pod: Obj, node_name: str, addresses: Mapping[str, Any]) -> Obj:
    """The pod as the downward API sees it once on the node: its node and addresses."""
    return {
        **pod,
        "spec": {**pod["spec"], "nodeName": node_name},
        "status": {**(pod.get("status") or {}), **addresses},
    }


def service_variables(url: str) -> dict[str, str]:
    """The ``kubernetes`` service's variables (envvars.FromServices) for the API server
    at ``url`` (``https://127.0.0.1:PORT``); none for an empty URL."""
    if not url:
        return {}
    parts = urlsplit(url)
    host, port = parts.hostname or "", str(parts.port or 443)
    address = f"tcp://{host}:{port}"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": address,
        f"KUBERNETES_PORT_{port}_TCP": address,
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": port,
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def _decoded(obj: Obj, plural: str) -> dict[str, str]:
    """What an env var can take from a ConfigMap (its ``data``) or a Secret (its
    ``data``, decoded)."""
    if plural == "configmaps":
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}
    return {
        k: base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (obj.get("data") or {}).items()
    }


async def container_env(
    pod: Obj,
    container: Obj,
    read: Reader,
    allocatable: Mapping[str, Any],
    service: Mapping[str, str],
) -> dict[str, str]:
    """The variables the container's spec gives it, with the service variables; raises
    :class:`ConfigError` for a missing source that is not optional."""
    namespace = pod["metadata"]["namespace"]
    cache: dict[tuple[str, str], Obj | None] = {}

    async def source(plural: str, name: str) -> Obj | None:
        if (plural, name) not in cache:
            cache[plural, name] = await read(plural, namespace, name)
        return cache[plural, name]

    kinds = {"configmaps": ("configmap", "ConfigMap"), "secrets": ("secret", "Secret")}
    env: dict[str, str] = {}
    for entry in container.get("envFrom") or []:
        plural, ref = (
            ("configmaps", entry["configMapRef"])
            if entry.get("configMapRef")
            else ("secrets", entry.get("secretRef") or {})
        )
        obj = await source(plural, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kinds[plural][0]} "{ref.get("name", "")}" not found')
        for key, value in _decoded(obj, plural).items():
            env[(entry.get("prefix") or "") + key] = value
    for var in container.get("env") or []:
        value = var.get("value") or ""
        origin = var.get("valueFrom")
        if value:
            value = expand(value, env, service)
        elif origin:
            if "fieldRef" in origin:
                value = field_value(pod, origin["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in origin:
                ref = origin["resourceFieldRef"]
                value = resource_value(pod, ref, container["name"], allocatable)
            else:
                plural, ref = (
                    ("configmaps", origin["configMapKeyRef"])
                    if "configMapKeyRef" in origin
                    else ("secrets", origin.get("secretKeyRef") or {})
                )
                name, key, optional = ref.get("name", ""), ref.get("key", ""), ref.get("optional")
                obj = await source(plural, name)
                if obj is None:
                    if optional:
                        continue
                    raise ConfigError(f'{kinds[plural][0]} "{name}" not found')
                data = _decoded(obj, plural)
                if key not in data:
                    if optional:
                        continue
                    raise ConfigError(
                        f"couldn't find key {key} in {kinds[plural][1]} {namespace}/{name}"
                    )
                value = data[key]
        env[var["name"]] = value
    for name, value in service.items():
        env.setdefault(name, value)
    return env
