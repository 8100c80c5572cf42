"""Pods and pod templates checked as kube-apiserver checks them
(``pkg/apis/core/validation``: ``ValidatePodSpec``, ``ValidatePodCreate``,
``ValidatePodTemplateSpec``), with its field paths and wording.

Not everything upstream checks is here: what durapod's pods, a Helm chart's Deployments
and the usual hand-written manifests can get wrong is (containers, images, names, env,
ports, probes, resources, volumes and their mounts, policies, tolerations, security
context ids). Updates are checked in ``pod_updates``.
"""

from __future__ import annotations

from typing import Any

from durapod.dev.apiserver import metadata, quantities
from durapod.dev.apiserver.fielderrors import (
    FieldError,
    config_key,
    dns_label,
    dns_subdomain,
    duplicate,
    forbidden,
    invalid,
    labels,
    names,
    non_negative,
    not_found,
    not_supported,
    port_name,
    port_number,
    port_or_name,
    range_error,
    required,
)

Obj = dict[str, Any]
_MAX_INT32 = 2**31 - 1
_PROTOCOLS = ["SCTP", "TCP", "UDP"]
_PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
_RESTART_POLICIES = ["Always", "OnFailure", "Never"]
_DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
_ENV_FIELD_PATHS = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
]
_STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
#: VolumeSource's fields, in the order validateVolumeSource checks them.
_VOLUME_SOURCES = (
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
)


# -- containers --------------------------------------------------------------------------


def _ports(path: str, ports: list[Obj]) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, port in enumerate(ports):
        where = f"{path}[{i}]"
        name = port.get("name") or ""
        if name:
            if msgs := port_name(name):
                errs += [invalid(f"{where}.name", name, m) for m in msgs]
            elif name in seen:
                errs.append(duplicate(f"{where}.name", name))
            else:
                seen.add(name)
        number = port.get("containerPort", 0)
        if not number:
            errs.append(required(f"{where}.containerPort"))
        else:
            errs += [invalid(f"{where}.containerPort", number, m) for m in port_number(number)]
        if port.get("hostPort"):
            errs += [
                invalid(f"{where}.hostPort", port["hostPort"], m)
                for m in port_number(port["hostPort"])
            ]
        protocol = port.get("protocol", "")
        if not protocol:
            errs.append(required(f"{where}.protocol"))
        elif protocol not in _PROTOCOLS:
            errs.append(not_supported(f"{where}.protocol", protocol, _PROTOCOLS))
    return errs


def _env_name(name: str) -> list[str]:
    """IsRelaxedEnvVarName (RelaxedEnvironmentVariableValidation is on in 1.35)."""
    if any(ord(c) > 126 or not c.isprintable() or c == "=" for c in name):
        return [
            "a valid environment variable name must consist only of printable ASCII "
            "characters other than '='"
        ]
    return []


def _key_selector(path: str, ref: Obj) -> list[FieldError]:
    name, key = ref.get("name", ""), ref.get("key", "")
    errs = names(f"{path}.name", name, dns_subdomain)
    if not key:
        errs.append(required(f"{path}.key"))
    else:
        errs += names(f"{path}.key", key, config_key)
    return errs


def _env(path: str, env: list[Obj]) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, var in enumerate(env):
        where = f"{path}[{i}]"
        name = var.get("name", "")
        if not name:
            errs.append(required(f"{where}.name"))
        else:
            errs += [invalid(f"{where}.name", name, m) for m in _env_name(name)]
        source = var.get("valueFrom")
        if source is None:
            continue
        sources = 0
        if (ref := source.get("fieldRef")) is not None:
            sources += 1
            ref_path = f"{where}.valueFrom.fieldRef"
            if not ref.get("apiVersion"):
                errs.append(required(f"{ref_path}.apiVersion"))
            elif not ref.get("fieldPath"):
                errs.append(required(f"{ref_path}.fieldPath"))
            else:
                field_path = ref["fieldPath"]
                subscripted = field_path.startswith(("metadata.labels[", "metadata.annotations["))
                if not subscripted and field_path not in _ENV_FIELD_PATHS:
                    errs.append(
                        not_supported(f"{ref_path}.fieldPath", field_path, _ENV_FIELD_PATHS)
                    )
        if source.get("resourceFieldRef") is not None:
            sources += 1
        for kind in ("configMapKeyRef", "secretKeyRef"):
            if (ref := source.get(kind)) is not None:
                sources += 1
                errs += _key_selector(f"{where}.valueFrom.{kind}", ref)
        if sources == 0:
            errs.append(
                invalid(
                    f"{where}.valueFrom",
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` "
                    "or `secretKeyRef`",
                )
            )
        elif var.get("value"):
            errs.append(
                invalid(f"{where}.valueFrom", "", "may not be specified when `value` is not empty")
            )
        elif sources > 1:
            errs.append(
                invalid(
                    f"{where}.valueFrom", "", "may not have more than one field specified at a time"
                )
            )
    return errs


def _resource_name(path: str, name: str) -> list[FieldError]:
    """validateContainerResourceName."""
    errs = [invalid(path, name, m) for m in metadata.qualified_name(name)]
    if errs:
        return errs
    if "/" not in name:
        standard = name in _STANDARD_CONTAINER_RESOURCES or name.startswith("hugepages-")
        if not standard:
            errs.append(invalid(path, name, "must be a standard resource type or fully qualified"))
            errs.append(invalid(path, name, "must be a standard resource for containers"))
    elif "kubernetes.io/" not in name and name.startswith("requests."):
        errs.append(invalid(path, name, "doesn't follow extended resource name standard"))
    return errs


def _overcommittable(name: str) -> bool:
    native = "/" not in name or "kubernetes.io/" in name
    return native and not name.startswith("hugepages-")


def _integer_resource(name: str) -> bool:
    """Extended resources (``nvidia.com/gpu``) come in whole units."""
    return "/" in name and "kubernetes.io/" not in name


def resources(path: str, reqs: Obj) -> list[FieldError]:
    """ValidateResourceRequirements (requests ≤ limits, names, non-negative values)."""
    errs: list[FieldError] = []
    limits, requests = reqs.get("limits") or {}, reqs.get("requests") or {}
    parsed: dict[str, dict[str, quantities.Quantity]] = {"limits": {}, "requests": {}}
    for part, values in (("limits", limits), ("requests", requests)):
        for name in sorted(values):
            where = f"{path}.{part}[{name}]"
            errs += _resource_name(where, name)
            try:
                q = quantities.from_json(values[name])
            except quantities.QuantityError:
                continue  # the decoder refused it already
            parsed[part][name] = q
            if q.value < 0:
                errs.append(invalid(where, str(q), "must be greater than or equal to 0"))
            if _integer_resource(name) and quantities.milli(q) % 1000:
                errs.append(invalid(where, str(q), "must be an integer"))
    for name, q in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None:
            if q.value != limit.value and not _overcommittable(name):
                errs.append(
                    invalid(f"{path}.requests", str(q), f"must be equal to {name} limit of {limit}")
                )
            elif q.value > limit.value:
                errs.append(
                    invalid(
                        f"{path}.requests",
                        str(q),
                        f"must be less than or equal to {name} limit of {limit}",
                    )
                )
        elif not _overcommittable(name):
            errs.append(
                required(f"{path}.limits", "Limit must be set for non overcommitable resources")
            )
    return errs


def _handler(path: str, handler: Obj) -> list[FieldError]:
    kinds = [
        k for k in ("exec", "httpGet", "tcpSocket", "grpc", "sleep") if handler.get(k) is not None
    ]
    if not kinds:
        return [required(path, "must specify a handler type")]
    errs = [forbidden(f"{path}.{k}", "may not specify more than 1 handler type") for k in kinds[1:]]
    kind = kinds[0]
    action = handler[kind]
    if kind == "exec" and not action.get("command"):
        errs.append(required(f"{path}.exec.command"))
    if kind == "httpGet":
        if not action.get("path"):
            errs.append(required(f"{path}.httpGet.path"))
        errs += port_or_name(f"{path}.httpGet.port", action.get("port", 0))
        if action.get("scheme") not in ("HTTP", "HTTPS"):
            errs.append(
                not_supported(f"{path}.httpGet.scheme", action.get("scheme", ""), ["HTTP", "HTTPS"])
            )
    if kind in ("tcpSocket", "grpc"):
        errs += port_or_name(f"{path}.{kind}.port", action.get("port", 0))
    return errs


def _probe(path: str, probe: Obj | None, liveness_like: bool) -> list[FieldError]:
    if probe is None:
        return []
    errs = _handler(path, probe)
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold"):
        errs += non_negative(f"{path}.{key}", probe.get(key, 0))
    errs += non_negative(f"{path}.failureThreshold", probe.get("failureThreshold", 0))
    grace = probe.get("terminationGracePeriodSeconds")
    if grace is not None and grace <= 0:
        errs.append(
            invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than 0")
        )
    if liveness_like and probe.get("successThreshold", 1) != 1:
        errs.append(invalid(f"{path}.successThreshold", probe.get("successThreshold"), "must be 1"))
    return errs


def _mounts(path: str, mounts: list[Obj], volumes: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, mount in enumerate(mounts):
        where = f"{path}[{i}]"
        name, mount_path = mount.get("name", ""), mount.get("mountPath", "")
        if not name:
            errs.append(required(f"{where}.name"))
        if name not in volumes:
            errs.append(not_found(f"{where}.name", name))
        if not mount_path:
            errs.append(required(f"{where}.mountPath"))
        if mount_path in seen:
            errs.append(invalid(f"{where}.mountPath", mount_path, "must be unique"))
        seen.add(mount_path)
    return errs


def _security_context(path: str, sc: Obj | None) -> list[FieldError]:
    errs: list[FieldError] = []
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        value = (sc or {}).get(key)
        if isinstance(value, int) and not 0 <= value <= _MAX_INT32:
            errs.append(invalid(f"{path}.{key}", value, range_error(0, _MAX_INT32)))
    return errs


def _container_common(path: str, c: Obj, volumes: set[str]) -> list[FieldError]:
    """validateContainerCommon."""
    errs: list[FieldError] = []
    name = c.get("name", "")
    if not name:
        errs.append(required(f"{path}.name"))
    else:
        errs += names(f"{path}.name", name, dns_label)
    if not c.get("image"):
        errs.append(required(f"{path}.image"))
    policy = c.get("terminationMessagePolicy", "")
    if not policy:
        errs.append(required(f"{path}.terminationMessagePolicy"))
    elif policy not in ("File", "FallbackToLogsOnError"):
        errs.append(
            not_supported(
                f"{path}.terminationMessagePolicy", policy, ["File", "FallbackToLogsOnError"]
            )
        )
    errs += _ports(f"{path}.ports", c.get("ports") or [])
    errs += _env(f"{path}.env", c.get("env") or [])
    errs += _mounts(f"{path}.volumeMounts", c.get("volumeMounts") or [], volumes)
    pull = c.get("imagePullPolicy", "")
    if not pull:
        errs.append(required(f"{path}.imagePullPolicy"))
    elif pull not in _PULL_POLICIES:
        errs.append(not_supported(f"{path}.imagePullPolicy", pull, _PULL_POLICIES))
    errs += resources(f"{path}.resources", c.get("resources") or {})
    errs += _security_context(f"{path}.securityContext", c.get("securityContext"))
    return errs


def _containers(path: str, containers: list[Obj], volumes: set[str]) -> list[FieldError]:
    if not containers:
        return [required(path)]
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        where = f"{path}[{i}]"
        errs += _container_common(where, c, volumes)
        if c.get("name", "") in seen:
            errs.append(duplicate(f"{where}.name", c.get("name", "")))
        seen.add(c.get("name", ""))
        for hook in ("postStart", "preStop"):
            if (handler := (c.get("lifecycle") or {}).get(hook)) is not None:
                errs += _handler(f"{where}.lifecycle.{hook}", handler)
        errs += _probe(f"{where}.livenessProbe", c.get("livenessProbe"), True)
        errs += _probe(f"{where}.readinessProbe", c.get("readinessProbe"), False)
        errs += _probe(f"{where}.startupProbe", c.get("startupProbe"), True)
        if c.get("restartPolicy") is not None:
            errs.append(
                forbidden(f"{where}.restartPolicy", "may not be set for non-init containers")
            )
    return errs


def _init_containers(path: str, spec: Obj, volumes: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    seen = {c.get("name", "") for c in spec.get("containers") or []}
    for i, c in enumerate(spec.get("initContainers") or []):
        where = f"{path}[{i}]"
        errs += _container_common(where, c, volumes)
        restart = c.get("restartPolicy")
        if restart is not None and restart != "Always":
            errs.append(not_supported(f"{where}.restartPolicy", restart, ["Always"]))
        if c.get("name", "") in seen:
            errs.append(duplicate(f"{where}.name", c.get("name", "")))
        elif c.get("name"):
            seen.add(c["name"])
        if restart != "Always":
            for key in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if c.get(key) is not None:
                    errs.append(
                        forbidden(
                            f"{where}.{key}",
                            "may not be set for init containers without restartPolicy=Always",
                        )
                    )
    return errs


# -- volumes and the rest of the spec ----------------------------------------------------


def _volumes(path: str, volumes: list[Obj]) -> tuple[set[str], list[FieldError]]:
    errs: list[FieldError] = []
    known: set[str] = set()
    for i, volume in enumerate(volumes):
        where = f"{path}[{i}]"
        found: list[FieldError] = []
        sources = [s for s in _VOLUME_SOURCES if volume.get(s) is not None]
        if not sources:
            found.append(required(where, "must specify a volume type"))
        found += [
            forbidden(f"{where}.{s}", "may not specify more than 1 volume type")
            for s in sources[1:]
        ]
        if sources:
            found += _volume_source(f"{where}.{sources[0]}", sources[0], volume[sources[0]])
        name = volume.get("name", "")
        if not name:
            found.append(required(f"{where}.name"))
        else:
            found += names(f"{where}.name", name, dns_label)
        if name in known:
            found.append(duplicate(f"{where}.name", name))
        if found:
            errs += found
        else:
            known.add(name)
    return known, errs


def _volume_source(path: str, kind: str, source: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    key = {"secret": "secretName", "configMap": "name", "persistentVolumeClaim": "claimName"}
    if kind in key and not source.get(key[kind]):
        errs.append(required(f"{path}.{key[kind]}"))
    mode = source.get("defaultMode")
    if isinstance(mode, int) and not 0 <= mode <= 0o777:
        errs.append(
            invalid(
                f"{path}.defaultMode",
                mode,
                "must be a number between 0 and 0777 (octal), both inclusive",
            )
        )
    return errs


def _policy(path: str, value: str, supported: list[str]) -> list[FieldError]:
    if not value:
        return [required(path)]
    return [] if value in supported else [not_supported(path, value, supported)]


def _tolerations(path: str, tolerations: list[Obj]) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, t in enumerate(tolerations):
        where = f"{path}[{i}]"
        key, operator = t.get("key", ""), t.get("operator", "")
        if key:
            errs += [invalid(f"{where}.key", key, m) for m in metadata.qualified_name(key)]
        if not key and operator != "Exists":
            errs.append(
                invalid(
                    f"{where}.operator",
                    operator,
                    'operator must be Exists when `key` is empty, which means "match all '
                    'values and all keys"',
                )
            )
        if t.get("tolerationSeconds") is not None and t.get("effect") != "NoExecute":
            errs.append(
                invalid(
                    f"{where}.effect",
                    t.get("effect", ""),
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                )
            )
        if operator in ("Equal", ""):
            if msgs := metadata.label_value(t.get("value", "")):
                errs.append(invalid(f"{where}.operator", t.get("value", ""), ";".join(msgs)))
        elif operator == "Exists":
            if t.get("value"):
                errs.append(
                    invalid(
                        f"{where}.operator", t, "value must be empty when `operator` is 'Exists'"
                    )
                )
        else:
            errs.append(not_supported(f"{where}.operator", operator, ["Equal", "Exists"]))
        effect = t.get("effect", "")
        effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
        if effect and effect not in effects:
            errs.append(not_supported(f"{where}.effect", effect, effects))
    return errs


def pod_spec(path: str, spec: Obj, is_pod: bool) -> list[FieldError]:
    """ValidatePodSpec, in upstream's order."""
    errs: list[FieldError] = []
    if spec.get("terminationGracePeriodSeconds") is None:
        errs.append(required(f"{path}.terminationGracePeriodSeconds"))
    volumes, volume_errs = _volumes(f"{path}.volumes", spec.get("volumes") or [])
    errs += volume_errs
    errs += _containers(f"{path}.containers", spec.get("containers") or [], volumes)
    errs += _init_containers(f"{path}.initContainers", spec, volumes)
    errs += _policy(f"{path}.restartPolicy", spec.get("restartPolicy", ""), _RESTART_POLICIES)
    errs += _policy(f"{path}.dnsPolicy", spec.get("dnsPolicy", ""), _DNS_POLICIES)
    errs += labels(f"{path}.nodeSelector", spec.get("nodeSelector"))
    errs += _security_context(f"{path}.securityContext", spec.get("securityContext"))
    for i, ref in enumerate(spec.get("imagePullSecrets") or []):
        if set(ref) - {"name"}:
            errs.append(invalid(f"{path}.imagePullSecrets[{i}]", ref, "only name may be set"))
    if spec.get("dnsPolicy") == "None" and not (spec.get("dnsConfig") or {}).get("nameservers"):
        if spec.get("dnsConfig") is None:
            errs.append(
                required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None")
            )
        else:
            errs.append(
                required(
                    f"{path}.dnsConfig.nameservers",
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                )
            )
    for key in ("serviceAccountName", "nodeName", "priorityClassName"):
        if spec.get(key):
            errs += names(f"{path}.{key}", spec[key], dns_subdomain)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and not 1 <= deadline <= _MAX_INT32:
        errs.append(invalid(f"{path}.activeDeadlineSeconds", deadline, range_error(1, _MAX_INT32)))
    for key in ("hostname", "subdomain"):
        if spec.get(key):
            errs += names(f"{path}.{key}", spec[key], dns_label)
    errs += _tolerations(f"{path}.tolerations", spec.get("tolerations") or [])
    preemption = spec.get("preemptionPolicy")
    if preemption is not None:
        errs += _policy(f"{path}.preemptionPolicy", preemption, ["PreemptLowerPriority", "Never"])
    if is_pod:
        for kind in ("containers", "initContainers"):
            for i, c in enumerate(spec.get(kind) or []):
                image = c.get("image", "")
                if image != image.strip():
                    errs.append(
                        invalid(
                            f"{path}.{kind}[{i}].image",
                            image,
                            "must not have leading or trailing whitespace",
                        )
                    )
    return errs


def template(path: str, tpl: Obj) -> list[FieldError]:
    """ValidatePodTemplateSpec."""
    meta = tpl.get("metadata") or {}
    errs = labels(f"{path}.labels", meta.get("labels"))
    errs += pod_spec(f"{path}.spec", tpl.get("spec") or {}, is_pod=False)
    if (tpl.get("spec") or {}).get("ephemeralContainers"):
        errs.append(
            forbidden(
                f"{path}.spec.ephemeralContainers",
                "ephemeral containers not allowed in pod template",
            )
        )
    return errs


# -- pods --------------------------------------------------------------------------------


def pod_create(pod: Obj) -> list[FieldError]:
    """ValidatePodCreate."""
    spec = pod.get("spec") or {}
    errs = pod_spec("spec", spec, is_pod=True)
    if spec.get("ephemeralContainers"):
        errs.append(forbidden("spec.ephemeralContainers", "cannot be set on create"))
    if spec.get("nodeName") and spec.get("schedulingGates"):
        errs.append(
            forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared")
        )
    return errs
