"""Container images for the subprocess kubelet: which ones it can "pull", and how a
failed pull reads and backs off, worded as the kubelet and containerd word them.

No container runtime runs here, so an image is a name mapped to a local environment (a
directory of executables put first on ``PATH``, e.g. a virtualenv's ``bin``). Image
names are compared as a container runtime compares them: normalised to the full
reference (``nope:1`` is ``docker.io/library/nope:1``; no tag means ``:latest``), then
matched exactly, so ``durapod`` does not run ``durapod:dev``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The image durapod's own pods run, and the environment it stands for.
DEV_IMAGE = "durapod:dev"
#: A file in an image's directory holding what an OCI image config would: its default
#: command (``{"Entrypoint": [...], "Cmd": [...]}``), for containers that give none.
CONFIG_FILE = "image-config.json"
_DOMAIN = re.compile(r"[^/]*[.:][^/]*|localhost")


def default_images() -> dict[str, Path]:
    """``durapod:dev`` → the Python environment this process runs in."""
    return {DEV_IMAGE: Path(sys.executable).parent}


def normalise(image: str) -> str:
    """The full reference a runtime resolves ``image`` to (docker's ParseNormalizedNamed)."""
    name, at, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    first, sep, rest = name.partition("/")
    if not sep or not _DOMAIN.fullmatch(first):
        first, rest = "docker.io", name
    if first == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    reference = f"{first}/{rest}"
    if tag or not at:
        reference += f":{tag or 'latest'}"
    return reference + (f"@{digest}" if at else "")


def with_default_tag(image: str) -> str:
    """The name the kubelet reports in its messages (applyDefaultImageTag): no tag → latest."""
    name = image.partition("@")[0]
    if "@" in image or name.rfind(":") > name.rfind("/"):
        return image
    return f"{image}:latest"


def pull_policy(container: dict[str, object]) -> str:
    """The container's imagePullPolicy, defaulted as the API server does: Always for
    ``:latest`` or no tag, IfNotPresent otherwise."""
    given = container.get("imagePullPolicy")
    if isinstance(given, str) and given:
        return given
    image = str(container.get("image") or "")
    return "Always" if with_default_tag(image).endswith(":latest") else "IfNotPresent"


class Images:
    """The images this node has: each full reference → its environment's bin directory."""

    def __init__(self, images: dict[str, Path]) -> None:
        self._by_reference = {normalise(name): path for name, path in images.items()}

    def find(self, image: str) -> Path | None:
        return self._by_reference.get(normalise(image))

    def with_defaults(self, container: dict[str, Any]) -> dict[str, Any]:
        """The container with its image's Entrypoint and Cmd filled in, as a runtime
        merges them: ``command`` replaces the Entrypoint (and drops the Cmd), ``args``
        replaces the Cmd."""
        where = self.find(str(container.get("image") or ""))
        config_file = where / CONFIG_FILE if where is not None else None
        if config_file is None or not config_file.exists() or container.get("command"):
            return container
        config = json.loads(config_file.read_text())
        args = container.get("args") or config.get("Cmd") or []
        return {**container, "command": config.get("Entrypoint") or [], "args": args}

    def node_status(self) -> list[dict[str, object]]:
        """``status.images`` of the Node: what the scheduler sees as present."""
        return [{"names": [ref], "sizeBytes": 0} for ref in sorted(self._by_reference)]


def pull_error(image: str) -> str:
    """What containerd answers for an image no registry has (the CRI error text)."""
    ref = normalise(image)
    return (
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
        f'failed to resolve reference "{ref}": {ref}: not found'
    )


@dataclass
class BackOff:
    """client-go's flowcontrol.Backoff as the kubelet uses it for image pulls.

    Each failure doubles the wait (from ``base`` up to ``cap``); a key left alone for
    twice ``cap`` starts again from ``base``. Times are monotonic seconds.
    """

    base: float
    cap: float
    _entries: dict[str, tuple[float, float]] = field(default_factory=dict)

    def in_back_off(self, key: str, now: float) -> bool:
        """True while the wait that followed the last failure has not passed."""
        entry = self._entries.get(key)
        return entry is not None and now - entry[1] < entry[0]

    def until(self, key: str) -> float:
        """When the current wait of ``key`` ends (0 when there is none)."""
        delay, last = self._entries.get(key, (0.0, 0.0))
        return last + delay

    def next(self, key: str, now: float) -> float:
        """Record a failure at ``now``; return the wait that starts."""
        entry = self._entries.get(key)
        if entry is None or now - entry[1] > 2 * self.cap:
            delay = self.base
        else:
            delay = min(entry[0] * 2, self.cap)
        self._entries[key] = (delay, now)
        return delay

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
