"""The node's OOM killer: a container over its memory limit is SIGKILLed (OOMKilled).

There are no cgroups here, so the watchdog polls the resident memory of the container's
process group and kills it once that passes the limit, as the kernel's OOM killer would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from durapod.dev.containers import Container, kill

log = logging.getLogger("durapod.dev.kubelet")
WATCHDOG_SECONDS = 0.1


async def watch_memory(c: Container) -> None:
    """Until the container's process ends: kill it once it is over its memory limit."""
    assert c.memory_limit is not None
    while c.process.returncode is None:
        if group_rss(c.process.pid) > c.memory_limit:
            log.info("pod %s/%s over its memory limit: OOM kill", c.namespace, c.name)
            c.killed_for = "OOMKilled"
            kill(c, signal.SIGKILL)
            return
        await asyncio.sleep(WATCHDOG_SECONDS)


def group_rss(pgid: int) -> int:
    """Resident memory of every process in a process group, in bytes."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[21]) * page
    return total
