"""Run Python with only what durapod's image installs importable.

The image's venv holds durapod with the ``operator`` and ``api`` extras; this checkout's
venv also has the ``dev`` and ``test`` ones. ``python tests/image_env.py -m MODULE ARGS...``
(or ``-c CODE``) refuses every installed distribution outside durapod[operator,api]'s
requirement closure, as the image would (``ModuleNotFoundError``, so optional imports fall
back as they would there), then runs MODULE as ``python -m`` does, from the current directory.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from importlib import metadata
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

IMAGE_EXTRAS = ("operator", "api")


def closure(root: str, extras: Sequence[str]) -> set[str]:
    """The canonical names of ``root[extras]`` and everything it requires, as installed."""
    names: set[str] = set()
    seen: set[tuple[str, str]] = set()
    todo = [(root, ""), *((root, extra) for extra in extras)]
    while todo:
        name, extra = todo.pop()
        key = (canonicalize_name(name), extra)
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # required only on another platform, or missing here as well
        names.add(key[0])
        for text in requires:
            req = Requirement(text)
            wanted = extra == "" if req.marker is None else req.marker.evaluate({"extra": extra})
            if wanted:
                todo += [(req.name, ""), *((req.name, e) for e in req.extras)]
    return names


def blocked_modules(root: str = "durapod", extras: Sequence[str] = IMAGE_EXTRAS) -> set[str]:
    """Top-level modules of installed distributions the image would not have."""
    allowed = closure(root, extras)
    return {
        top
        for top, dists in metadata.packages_distributions().items()
        if top != root and not any(canonicalize_name(d) in allowed for d in dists)
    }


class _Refuse(MetaPathFinder):
    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not in the image)")
        return None


def main(argv: list[str]) -> None:
    blocked = blocked_modules()
    for name in list(sys.modules):  # what computing the closure imported
        if name.partition(".")[0] in blocked:
            del sys.modules[name]
    sys.meta_path.insert(0, _Refuse(blocked))
    sys.path[0] = os.getcwd()  # as `python -m` and `-c` have it, not this file's directory
    if argv[:1] == ["-m"] and len(argv) > 1:
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[:1] == ["-c"] and len(argv) > 1:
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.exit("usage: image_env.py -m MODULE [ARGS...] | -c CODE [ARGS...]")


if __name__ == "__main__":
    main(sys.argv[1:])
