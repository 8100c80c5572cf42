"""The first process of a container on the subprocess node: it gives the container its own
mount namespace with the pod's volumes at their ``mountPath``, then becomes the
container's process (``exec``), so the pid the kubelet watches, signals and OOM-kills is
the container's own.

What it does, in the order a runtime (runc) does it:

1. ``unshare(CLONE_NEWNS)`` and every mount made private, so nothing done here reaches
   the machine or another pod.
2. Each volume bind-mounted at its ``mountPath``, parents before children. A mount point
   that does not exist is made without writing to the machine's filesystem: the
   directory that should hold it is covered by a tmpfs whose entries are bind mounts of
   the originals (the machine's ``/run`` stays visible beside the new
   ``/run/secrets/...``); when a top-level directory is missing, the container gets a
   new root built the same way (``chroot``).
3. Read-only mounts remounted read-only; with ``readOnlyRootFilesystem`` the root (and
   whatever step 2 bound of it) too, leaving the volumes, ``/proc``, ``/dev`` and
   ``/sys`` as they were.
4. ``exec`` of the command. Until then the status pipe (``--status FD``, closed by the
   ``exec``) carries the reason of any failure, and the process exits 128, as a
   runtime's start error does.

Standard library only, run as ``python -I podinit.py``: the container's own environment
(``PYTHONPATH``, say) must not change how this script runs.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
#: The exit code of a container that could not be started (runc's).
START_ERROR = 128
#: Where the root's own special filesystems are: left writable under a read-only root.
_SPECIAL = ("/proc", "/dev", "/sys")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.unshare.argtypes = [ctypes.c_int]


class StartError(Exception):
    """The container cannot be started; the message says why, as a runtime says it."""


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def b(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    if _libc.mount(b(source), b(target), b(fstype), flags, b(data) if data else None) != 0:
        error = ctypes.get_errno()
        raise StartError(f"mount {source or ''} on {target}: {os.strerror(error)}")


def _unshare() -> None:
    if _libc.unshare(CLONE_NEWNS) != 0:
        error = ctypes.get_errno()
        raise StartError(f"unshare(CLONE_NEWNS): {os.strerror(error)}")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


@dataclass
class Namespace:
    """The container's mount namespace as it is being built."""

    #: A directory of the kubelet's for this container (a new root is built there).
    scratch: str
    #: Directories whose entries are this namespace's own (tmpfs, or made on one).
    private: set[str] = field(default_factory=set)
    #: Volume mount points: what is under them is the volume's.
    volumes: list[str] = field(default_factory=list)

    def _is_private(self, directory: str) -> bool:
        return directory in self.private or any(_within(directory, v) for v in self.volumes)

    def ensure(self, path: str, directory: bool) -> None:
        """Make ``path`` exist (a directory, or an empty file to bind a file onto)
        without writing to the machine's filesystem."""
        if os.path.lexists(path):
            return
        parent = os.path.dirname(path)
        self.ensure(parent, True)
        if not self._is_private(parent):
            self._cover(parent)
        if directory:
            os.mkdir(path, 0o755)
            self.private.add(path)
        else:
            with open(path, "a"):
                pass

    def ensure_root(self) -> None:
        """A new root, for a mount point whose top-level directory is missing."""
        self._cover("/")

    def _cover(self, directory: str) -> None:
        """Put a tmpfs over ``directory`` holding bind mounts of what it held."""
        if directory == "/":
            self._new_root()
            return
        info = os.stat(directory)
        entries = sorted(os.listdir(directory))
        original = os.open(directory, os.O_PATH | os.O_DIRECTORY)
        try:
            mode = f"mode={stat.S_IMODE(info.st_mode):o},uid={info.st_uid},gid={info.st_gid}"
            _mount("tmpfs", directory, "tmpfs", 0, mode)
            for name in entries:
                self._copy_entry(f"/proc/self/fd/{original}/{name}", os.path.join(directory, name))
        finally:
            os.close(original)
        self.private.add(directory)

    def _new_root(self) -> None:
        """A new root: a tmpfs holding bind mounts of the machine's top-level entries."""
        root = tempfile.mkdtemp(prefix="rootfs-", dir=self.scratch)
        _mount("tmpfs", root, "tmpfs", 0, "mode=755")
        for name in sorted(os.listdir("/")):
            self._copy_entry(f"/{name}", os.path.join(root, name))
        cwd = os.getcwd()
        os.chroot(root)
        os.chdir(cwd if os.path.isdir(cwd) else "/")
        self.private = {"/"}

    def _copy_entry(self, source: str, target: str) -> None:
        info = os.lstat(source)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(source), target)
            return
        if stat.S_ISDIR(info.st_mode):
            os.mkdir(target, stat.S_IMODE(info.st_mode))
        else:
            with open(target, "a"):
                pass
        _mount(source, target, None, MS_BIND | MS_REC)


def _mount_points() -> list[str]:
    """Every mount point this process sees (``/proc/self/mountinfo``, unescaped)."""
    with open("/proc/self/mountinfo") as f:
        fields = [line.split(" ")[4] for line in f]
    return [
        p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        for p in fields
    ]


def _remount_read_only(target: str) -> None:
    info = os.statvfs(target)
    kept = (MS_NOSUID if info.f_flag & os.ST_NOSUID else 0) | (
        MS_NODEV if info.f_flag & os.ST_NODEV else 0
    )
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def set_up(spec: dict[str, Any]) -> None:
    """Enter a new mount namespace laid out as ``spec`` says (see the module)."""
    namespace = Namespace(spec["scratch"])
    mounts = sorted(spec.get("mounts") or [], key=lambda m: m["target"].rstrip("/").count("/"))
    _unshare()
    # The volumes are held open first (in this namespace: a bind mount's source must be
    # of it), as one mount may cover where another's source is.
    sources = {}
    for mount in mounts:
        try:
            sources[mount["target"]] = os.open(mount["source"], os.O_PATH)
        except OSError as exc:
            raise StartError(f"volume source {mount['source']}: {exc.strerror}") from exc
    # The image's directories a volume would cover, held open to be put back on top.
    targets = [os.path.normpath(m["target"]) for m in mounts]
    image = {}
    for path in map(os.path.normpath, spec.get("image") or []):
        if any(_within(path, t) for t in targets) and os.path.isdir(path):
            image[path] = os.open(path, os.O_PATH)
    wanted = [m["target"] for m in mounts] + [spec.get("cwd") or "/"]
    if any(not os.path.lexists("/" + path.strip("/").split("/")[0]) for path in wanted):
        namespace.ensure_root()
    for mount in mounts:
        target = os.path.normpath(mount["target"])
        fd = sources[mount["target"]]
        namespace.ensure(target, stat.S_ISDIR(os.fstat(fd).st_mode))
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        namespace.volumes.append(target)
    for path, fd in image.items():
        namespace.ensure(path, True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    for fd in [*sources.values(), *image.values()]:
        os.close(fd)
    namespace.ensure(os.path.normpath(spec.get("cwd") or "/"), True)  # runc makes it too
    if spec.get("readOnlyRootFilesystem"):
        # Every mount but the volumes and /proc, /dev and /sys is the root's content.
        kept = [*_SPECIAL, *namespace.volumes]
        for target in dict.fromkeys(_mount_points()):
            if not any(_within(target, k) for k in kept):
                _remount_read_only(target)
    for mount in mounts:
        if mount.get("readOnly"):
            _remount_read_only(os.path.normpath(mount["target"]))


def check(scratch: str) -> None:
    """What the kubelet tries at start: a mount namespace with one bind mount in it."""
    source = tempfile.mkdtemp(prefix="volume-", dir=scratch)
    with open(os.path.join(source, "probe"), "w") as f:
        f.write("ok")
    target = tempfile.mkdtemp(prefix="mountpoint-", dir=scratch)
    set_up({"scratch": scratch, "mounts": [{"source": source, "target": target}]})
    with open(os.path.join(target, "probe")) as f:
        if f.read() != "ok":
            raise StartError("a bind mount did not show its source")


def main(argv: list[str]) -> None:
    """``podinit.py --status FD SPEC_JSON -- COMMAND...`` or ``podinit.py --check DIR``."""
    if argv[:1] == ["--check"]:
        try:
            check(argv[1])
        except (StartError, OSError) as exc:
            print(exc, file=sys.stderr)
            sys.exit(1)
        return
    status = int(argv[1])
    spec = json.loads(argv[2])
    command = argv[argv.index("--") + 1 :]
    try:
        set_up(spec)
        os.chdir(spec["cwd"])
        if not command:
            raise StartError("no command specified")
        os.set_inheritable(status, False)  # closed by exec: the kubelet's "started"
        try:
            os.execvpe(command[0], command, dict(os.environ))
        except FileNotFoundError as exc:
            if os.sep in command[0]:
                raise StartError(
                    f'exec: "{command[0]}": stat {command[0]}: no such file or directory'
                ) from exc
            raise StartError(f'exec: "{command[0]}": executable file not found in $PATH') from exc
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise StartError(f'exec: "{command[0]}": {reason}') from exc
    except (StartError, OSError) as exc:
        message = str(exc)
        print(message, file=sys.stderr, flush=True)
        os.write(status, message.encode())
        os._exit(START_ERROR)


if __name__ == "__main__":
    main(sys.argv[1:])
