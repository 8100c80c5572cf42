"""Pulling an image the stand-in node cannot have, as the kubelet's image manager does.

No image is really pulled (see :mod:`durapod.dev.images`): a pod whose image the node
does not know waits in ``ErrImagePull``, then ``ImagePullBackOff`` while the back-off
lasts, then tries again, with the kubelet's Events, until the pod is deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from durapod.dev import images
from durapod.dev.nodeapi import NodeApi, now

Obj = dict[str, Any]
#: Shows a pod's container waiting: (pod, container, startTime, reason, message).
ReportWaiting = Callable[[Obj, Obj, str, str, str], Awaitable[None]]


async def pull_back_off(
    api: NodeApi, back_off: images.BackOff, pod: Obj, container: Obj, report: ReportWaiting
) -> None:
    """Fail to pull ``container``'s image forever, backing off between tries."""
    image = images.with_default_tag(container.get("image") or "")
    ref = f"spec.containers{{{container['name']}}}"
    started = now()
    shown: tuple[str, str] | None = None

    async def wait(reason: str, message: str) -> None:
        nonlocal shown
        if shown != (reason, message):
            shown = (reason, message)
            await report(pod, container, started, reason, message)
        await api.record(pod, "Warning", "Failed", f"Error: {reason}", field_path=ref)

    if images.pull_policy(container) == "Never":
        message = f'Container image "{image}" is not present with pull policy of Never'
        await api.record(pod, "Warning", "ErrImageNeverPull", message, field_path=ref)
        await wait("ErrImageNeverPull", message)
        return
    key = f"{pod['metadata']['uid']}_{image}"
    error = images.pull_error(image)
    # The pod worker syncs a pod that failed to start again after a while; half the
    # base back-off shows ImagePullBackOff between two pulls, as on a node.
    sync = back_off.base / 2
    loop = asyncio.get_running_loop()
    try:
        while True:
            moment = loop.time()
            if back_off.in_back_off(key, moment):
                await api.record(
                    pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', field_path=ref
                )
                await wait(
                    "ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {error}'
                )
                left = back_off.until(key) - loop.time()
                await asyncio.sleep(max(0.0, min(sync, left)) + 0.001)
                continue
            await api.record(pod, "Normal", "Pulling", f'Pulling image "{image}"', field_path=ref)
            await api.record(
                pod, "Warning", "Failed", f'Failed to pull image "{image}": {error}', field_path=ref
            )
            back_off.next(key, loop.time())
            await wait("ErrImagePull", error)
            await asyncio.sleep(sync)
    finally:
        back_off.forget(key)
