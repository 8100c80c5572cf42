"""A pod's volumes on the subprocess node, filled as a kubelet fills them, and where each
container sees them.

Each volume is a directory under ``ROOT/<pod uid>/<volume>``:

- ``emptyDir`` starts empty (mode 0777, as the kubelet makes it);
- ``hostPath`` is the machine's own path (``DirectoryOrCreate`` and ``FileOrCreate``
  make it, ``Directory``, ``File`` and the others check it);
- ``secret``, ``configMap``, ``downwardAPI`` and ``projected`` hold their files as the
  kubelet's AtomicWriter lays them out (``..<timestamp>/`` with the files, ``..data``
  pointing at it, and one symlink per top-level name through ``..data``), ``items``
  picking keys and paths, ``defaultMode`` and per-item ``mode`` as file modes; a missing
  Secret, ConfigMap or key that is not ``optional`` fails the mount (``FailedMount``,
  tried again). A ``projected`` volume's ``serviceAccountToken`` sources get a token of
  the pod's ServiceAccount bound to the pod (TokenRequest), renewed once 80 % of its
  lifetime has passed like the kubelet's token manager does; each renewal rewrites the
  volume at once, so a reader never sees half a token.
- any other kind (a PersistentVolumeClaim, say) is an empty directory.

Each container runs in its own mount namespace (see :mod:`durapod.dev.podinit`) with
these directories bind-mounted at its ``volumeMounts``' paths (``subPath`` and
``subPathExpr`` too); ``secret``, ``configMap``, ``downwardAPI`` and ``projected`` volumes
are always read-only, as the kubelet mounts them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from durapod.dev import podenv, podinit
from durapod.dev.apiserver import tls
from durapod.dev.nodeapi import NodeApi

log = logging.getLogger("durapod.dev.kubelet")
Obj = dict[str, Any]
#: The kubelet renews a projected token once this share of its lifetime has passed.
RENEW_AT = 0.8
#: The kubelet's default for a source without expirationSeconds.
DEFAULT_TOKEN_SECONDS = 3600
#: The mode of a file a volume does not give one (0644).
DEFAULT_MODE = 0o644
#: Volume kinds the kubelet always mounts read-only.
READ_ONLY_KINDS = ("secret", "configMap", "downwardAPI", "projected")
#: The machine's hosts file, which a pod on the node's network starts from.
HOSTS = Path("/etc/hosts")
#: A file's content and mode, by its path in the volume.
Payload = dict[str, tuple[bytes, int]]


class MountError(Exception):
    """A volume could not be set up (its ServiceAccount is missing, say): the pod waits."""


class NoMountNamespaces(RuntimeError):
    """This machine does not let the kubelet give a container its own mounts."""


def check_mount_namespaces() -> None:
    """Make sure a container can get its own mount namespace here (it needs root, or
    CAP_SYS_ADMIN); raise :class:`NoMountNamespaces` saying why not."""
    with tempfile.TemporaryDirectory(prefix="durapod-kubelet-check-") as scratch:
        result = subprocess.run(
            [sys.executable, "-I", podinit.__file__, "--check", scratch],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise NoMountNamespaces(
            "the stand-in kubelet runs each container in its own mount namespace, so its "
            "volumes are at their mountPath; this machine refused one "
            f"({result.stderr.strip() or f'exit {result.returncode}'}). Run it as root "
            "(or with CAP_SYS_ADMIN)."
        )


class Volumes:
    def __init__(
        self, api: NodeApi, root: Path, allocatable: Mapping[str, Any] | None = None
    ) -> None:
        self.api = api
        self.root = root
        #: The node's allocatable resources: a downward API limit not set is these.
        self.allocatable = dict(allocatable or {})
        self._renewals: dict[str, list[asyncio.Task[None]]] = {}

    # -- reading the API ----------------------------------------------------------------

    async def read(self, plural: str, namespace: str, name: str) -> Obj | None:
        """A ConfigMap or Secret of the pod's namespace (None: not there)."""
        url = f"{self.api.api_url}/api/v1/namespaces/{namespace}/{plural}/{name}"
        try:
            async with self.api.session.get(url) as response:
                if response.status == 404:
                    return None
                response.raise_for_status()
                found: Obj = await response.json()
                return found
        except aiohttp.ClientError as exc:
            raise MountError(f"reading {plural} {namespace}/{name}: {exc}") from exc

    # -- setting volumes up -------------------------------------------------------------

    def scratch(self, uid: str) -> Path:
        """The pod's own directory for what its containers' namespaces need."""
        path = self.root / uid / ".scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def mount(self, pod: Obj) -> dict[str, Path]:
        """Set up the pod's volumes; their directories by volume name."""
        uid = pod["metadata"]["uid"]
        dirs: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            if (host := volume.get("hostPath")) is not None:
                dirs[name] = _host_path(name, host)
                continue
            path = self.root / uid / name
            if path.exists():
                dirs[name] = path  # set up already (a restarted container)
                continue
            path.mkdir(parents=True)
            dirs[name] = path
            if "emptyDir" in volume:
                path.chmod(0o777)
            elif any(k in volume for k in READ_ONLY_KINDS):
                await self._fill(pod, volume, path)
        return dirs

    async def _fill(self, pod: Obj, volume: Obj, path: Path) -> None:
        tokens: dict[str, tuple[str, float]] = {}
        try:
            payload, renew_in = await self._payload(pod, volume, tokens)
        except MountError:
            shutil.rmtree(path, ignore_errors=True)  # tried afresh next time
            raise
        write_atomically(path, payload)
        if renew_in is None:
            return

        async def renew(delay: float) -> None:
            while True:
                await asyncio.sleep(delay)
                try:
                    fresh, next_in = await self._payload(pod, volume, tokens)
                except MountError as exc:
                    log.warning("renewing volume %s: %s", volume["name"], exc)
                    delay = 1.0
                    continue
                write_atomically(path, fresh)
                delay = next_in or delay

        task = asyncio.create_task(renew(renew_in))
        self._renewals.setdefault(pod["metadata"]["uid"], []).append(task)

    async def _payload(
        self, pod: Obj, volume: Obj, tokens: dict[str, tuple[str, float]]
    ) -> tuple[Payload, float | None]:
        """The volume's files, and when its earliest token wants renewing (seconds)."""
        name = volume["name"]
        namespace = pod["metadata"]["namespace"]
        if "projected" in volume:
            projected = volume["projected"]
            mode = int(projected.get("defaultMode", DEFAULT_MODE))
            sources = projected.get("sources") or []
        else:
            kind = next(k for k in READ_ONLY_KINDS if k in volume)
            mode = int(volume[kind].get("defaultMode", DEFAULT_MODE))
            source = dict(volume[kind])
            if kind == "secret":
                source["name"] = source.pop("secretName", "")
            sources = [{kind: source}]
        payload: Payload = {}
        renew_in: float | None = None
        for source in sources:
            if "serviceAccountToken" in source:
                request = source["serviceAccountToken"]
                token, due = await self._token(pod, name, request, tokens)
                payload[request["path"]] = (token.encode(), mode)
                renew_in = due if renew_in is None else min(renew_in, due)
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    payload[item["path"]] = (
                        self._downward(pod, name, item).encode(),
                        item.get("mode", mode),
                    )
            else:
                kind = "secret" if "secret" in source else "configMap"
                payload.update(await self._keys(namespace, name, kind, source[kind], mode))
        return payload, renew_in

    def _downward(self, pod: Obj, volume: str, item: Obj) -> str:
        try:
            if "fieldRef" in item:
                return podenv.field_value(pod, item["fieldRef"]["fieldPath"])
            ref = item.get("resourceFieldRef") or {}
            return podenv.resource_value(pod, ref, ref.get("containerName", ""), self.allocatable)
        except podenv.ConfigError as exc:
            raise MountError(f'MountVolume.SetUp failed for volume "{volume}" : {exc}') from exc

    async def _keys(
        self, namespace: str, volume: str, kind: str, source: Obj, mode: int
    ) -> Payload:
        """A Secret's or ConfigMap's keys as files (all of them, or its ``items``)."""
        plural, word = ("secrets", "secret") if kind == "secret" else ("configmaps", "configmap")
        name = source.get("name", "")
        obj = await self.read(plural, namespace, name)
        if obj is None:
            if source.get("optional"):
                return {}
            raise MountError(
                f'MountVolume.SetUp failed for volume "{volume}" : {word} "{name}" not found'
            )
        data = {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        if kind == "secret":
            data.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
        else:
            data.update({k: str(v).encode() for k, v in (obj.get("data") or {}).items()})
        items = source.get("items")
        if not items:
            return {key: (value, mode) for key, value in data.items()}
        payload: Payload = {}
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                problem = (
                    "references non-existent secret key"
                    if kind == "secret"
                    else "configmap references non-existent config key"
                )
                raise MountError(
                    f'MountVolume.SetUp failed for volume "{volume}" : {problem}: {item["key"]}'
                )
            payload[item["path"]] = (data[item["key"]], int(item.get("mode", mode)))
        return payload

    async def _token(
        self, pod: Obj, volume: str, request: Obj, tokens: dict[str, tuple[str, float]]
    ) -> tuple[str, float]:
        """The source's token (a new one once 80 % of the last one's life has passed) and
        the seconds until it is due for renewal."""
        audience = request.get("audience") or ""
        seconds = int(request.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        loop = asyncio.get_running_loop()
        key = f"{audience}/{seconds}"
        if key in tokens and tokens[key][1] > loop.time():
            token, due = tokens[key]
            return token, due - loop.time()
        token, answer = await self.api.request_token(pod, audience, seconds)
        if not token:
            raise MountError(
                f'MountVolume.SetUp failed for volume "{volume}" : failed to fetch token: '
                f"{answer.get('message') or answer}"
            )
        tokens[key] = (token, loop.time() + seconds * RENEW_AT)
        return token, seconds * RENEW_AT

    # -- mounting into a container ------------------------------------------------------

    def mounts(
        self, pod: Obj, container: Obj, dirs: dict[str, Path], env: Mapping[str, str]
    ) -> list[Obj]:
        """The bind mounts that put the pod's volumes where ``container`` wants them."""
        kinds = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        out = []
        for mount in container.get("volumeMounts") or []:
            source = dirs[mount["name"]]
            sub = mount.get("subPath") or ""
            if mount.get("subPathExpr"):
                sub = podenv.expand(mount["subPathExpr"], env)
            if sub:
                source = source / sub
                if not source.exists():
                    source.mkdir(parents=True)  # the kubelet makes a missing subPath
            volume = kinds.get(mount["name"]) or {}
            out.append(
                {
                    "source": str(source),
                    "target": mount["mountPath"],
                    "readOnly": bool(mount.get("readOnly"))
                    or any(k in volume for k in READ_ONLY_KINDS),
                }
            )
        return out

    def hosts_file(self, pod: Obj, api_host: str) -> Path:
        """The pod's ``/etc/hosts`` as the kubelet keeps it for a pod on the node's
        network: the machine's own, then (there is no cluster DNS here) the API server's
        in-cluster names at its service address, then the pod's ``hostAliases``."""
        lines = ["# Kubernetes-managed hosts file (host network).", HOSTS.read_text().rstrip()]
        if api_host:
            lines += ["", "# The API server's in-cluster names (no cluster DNS here).", api_host]
            lines[-1] += "\t" + " ".join(tls.SERVING_NAMES[1:])
        if aliases := pod["spec"].get("hostAliases"):
            lines += ["", "# Entries added by HostAliases."]
            lines += [f"{a['ip']}\t" + "\t".join(a.get("hostnames") or []) for a in aliases]
        path: Path = self.root / pod["metadata"]["uid"] / ".etc-hosts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def close(self) -> None:
        """Stop renewing every pod's tokens (the node goes away)."""
        for uid in list(self._renewals):
            for task in self._renewals.pop(uid):
                task.cancel()

    def unmount(self, uid: str) -> None:
        """The pod is gone: stop renewing its tokens and remove its volumes."""
        for task in self._renewals.pop(uid, []):
            task.cancel()
        shutil.rmtree(self.root / uid, ignore_errors=True)


def _host_path(volume: str, source: Obj) -> Path:
    """A hostPath volume's path, made or checked as its ``type`` says."""
    path = Path(source["path"])
    kind = source.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    checks = {
        "Directory": (Path.is_dir, "directory"),
        "File": (Path.is_file, "file"),
        "Socket": (Path.is_socket, "socket"),
        "CharDevice": (Path.is_char_device, "character device"),
        "BlockDevice": (Path.is_block_device, "block device"),
    }
    if kind in checks and not checks[kind][0](path):
        raise MountError(
            f'MountVolume.SetUp failed for volume "{volume}" : hostPath type check failed: '
            f"{path} is not a {checks[kind][1]}"
        )
    return path


def write_atomically(target: Path, payload: Payload) -> None:
    """Lay ``payload`` out in ``target`` as the kubelet's AtomicWriter does: a new
    timestamped directory, ``..data`` switched to it in one rename, a symlink through
    ``..data`` for each top-level name, and what the last write had removed."""
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    fresh = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    fresh.chmod(0o755)
    for relative, (content, mode) in payload.items():
        file = fresh / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
        file.chmod(stat.S_IMODE(mode))
    data = target / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    staged = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    staged.symlink_to(fresh.name)
    os.replace(staged, data)
    visible = {relative.split("/", 1)[0] for relative in payload}
    for name in visible:
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for entry in target.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in visible:
            entry.unlink()
    if old is not None:
        shutil.rmtree(target / old, ignore_errors=True)
