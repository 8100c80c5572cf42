"""Starting a container's process: :mod:`durapod.dev.podinit` in a session of its own.

podinit mounts the pod's volumes in a mount namespace of its own and then execs the
container's command (so its pid is the container's); it says through a pipe whether that
went well. A start that fails (a command not found, say) exits 128; :func:`launch` gives
the reason in containerd's words, as a runtime's StartError.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from durapod.dev import podinit

#: How containerd words a container that could not be started, before runc's reason.
START_ERROR_PREFIX = (
    "failed to create containerd task: failed to create shim task: OCI runtime create "
    "failed: runc create failed: unable to start container process: "
)


async def launch(
    prefix: Sequence[str],
    layout: Mapping[str, Any],
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    started: Callable[[asyncio.subprocess.Process], object],
) -> tuple[asyncio.subprocess.Process, str | None]:
    """Start ``command`` under ``prefix`` (a network namespace's, say) with podinit's
    ``layout``, its output appended to ``log_path``; the process, and why it could not
    start (None: it runs). ``started`` is given the process at once, so that a node
    going away meanwhile can still kill it."""
    status_read, status_write = os.pipe()
    try:
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *prefix,
                sys.executable,
                "-I",
                podinit.__file__,
                "--status",
                str(status_write),
                json.dumps(layout),
                "--",
                *command,
                env=dict(env),
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(status_write,),
            )
    finally:
        os.close(status_write)
    started(process)
    failure = await asyncio.to_thread(_read_to_end, status_read)
    if not failure:
        return process, None
    return process, f"{START_ERROR_PREFIX}{failure.decode(errors='replace')}: unknown"


def _read_to_end(fd: int) -> bytes:
    """Everything written to a pipe until its last writer closes it; closes ``fd``."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
