"""A pod's volumes on the subprocess node, filled as a kubelet fills them.

Each volume is a directory under ``ROOT/<pod uid>/<volume>``: ``emptyDir`` starts empty;
a ``projected`` volume's ``serviceAccountToken`` sources get a token of the pod's
ServiceAccount bound to the pod (TokenRequest, as the kubelet asks for one), renewed once
80 % of its lifetime has passed, like the kubelet's token manager, and written atomically
so a reader never sees half a token.

A process here shares the machine's filesystem, so a container cannot see a volume at its
``mountPath``; instead, an environment value that starts with a mount path is pointed at
the volume's directory (``DURAPOD_TOKEN_FILE=/var/run/secrets/durapod.io/token`` reads
the pod's own token). That is the one way this node differs from a real one here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from durapod.dev.nodeapi import NodeApi

log = logging.getLogger("durapod.dev.kubelet")
Obj = dict[str, Any]
#: The kubelet renews a projected token once this share of its lifetime has passed.
RENEW_AT = 0.8
#: The kubelet's default for a source without expirationSeconds.
DEFAULT_TOKEN_SECONDS = 3600


class MountError(Exception):
    """A volume could not be set up (its ServiceAccount is missing, say): the pod waits."""


class Volumes:
    def __init__(self, api: NodeApi, root: Path) -> None:
        self.api = api
        self.root = root
        self._renewals: dict[str, list[asyncio.Task[None]]] = {}

    async def mount(self, pod: Obj) -> dict[str, Path]:
        """Set up the pod's volumes; their directories by volume name."""
        uid = pod["metadata"]["uid"]
        dirs: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            path = self.root / uid / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            dirs[volume["name"]] = path
            for source in (volume.get("projected") or {}).get("sources") or []:
                if (request := source.get("serviceAccountToken")) is not None:
                    await self._token(pod, volume["name"], path, request)
        return dirs

    async def _token(self, pod: Obj, volume: str, path: Path, request: Obj) -> None:
        audience = request.get("audience") or ""
        seconds = int(request.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        target = path / request["path"]
        await self._write_token(pod, volume, target, audience, seconds)

        async def renew() -> None:
            while True:
                await asyncio.sleep(seconds * RENEW_AT)
                with contextlib.suppress(MountError):
                    await self._write_token(pod, volume, target, audience, seconds)

        task = asyncio.create_task(renew())
        self._renewals.setdefault(pod["metadata"]["uid"], []).append(task)

    async def _write_token(
        self, pod: Obj, volume: str, target: Path, audience: str, seconds: int
    ) -> None:
        token, answer = await self.api.request_token(pod, audience, seconds)
        if not token:
            raise MountError(
                f'MountVolume.SetUp failed for volume "{volume}" : failed to fetch token: '
                f"{answer.get('message') or answer}"
            )
        partial = target.with_name(f".{target.name}.new")
        partial.write_text(token)
        os.replace(partial, target)

    def unmount(self, uid: str) -> None:
        """The pod is gone: stop renewing its tokens and remove its volumes."""
        for task in self._renewals.pop(uid, []):
            task.cancel()
        shutil.rmtree(self.root / uid, ignore_errors=True)


def translate(container: Obj, dirs: dict[str, Path], value: str) -> str:
    """An environment value as the process must read it: a path under a mount points
    into that volume's directory."""
    for mount in container.get("volumeMounts") or []:
        base = mount["mountPath"].rstrip("/")
        if mount["name"] in dirs and (value == base or value.startswith(base + "/")):
            return str(dirs[mount["name"]]) + value[len(base) :]
    return value
