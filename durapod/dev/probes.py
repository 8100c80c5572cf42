"""Container probes, as the kubelet's prober runs them: startup, liveness and readiness.

Each probe of a running container has a worker (:class:`Prober`) that waits
``initialDelaySeconds``, then tries the probe every ``periodSeconds`` with
``timeoutSeconds``; the result flips only after ``failureThreshold`` failures or
``successThreshold`` successes in a row. Until its first result a readiness probe reads
as failed, a liveness or startup probe as passed; liveness and readiness wait until the
startup probe (if any) has passed, and the startup probe stops once it has. Every failed
try is a ``Unhealthy`` Event worded as the kubelet words it (``Readiness probe failed:
...``).

The handlers: ``httpGet`` (scheme, host (the pod's IP by default), port by number or
container port name, path, headers; 200 to 399 passes, redirects are not followed,
certificates are not checked), ``tcpSocket`` (a connection opens) and ``exec`` (the command exits 0,
run as the container's processes run, see :class:`Target`). ``grpc`` probes are not
implemented: they fail, each time saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("durapod.dev.kubelet")
Obj = dict[str, Any]
#: The probe kinds, in the order the kubelet reads them from a container.
KINDS = ("startupProbe", "livenessProbe", "readinessProbe")
_NAMES = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}
#: The most of a failed probe's output an Event carries (the kubelet's maxProbeRespLength).
_MAX_OUTPUT = 10 * 1024


@dataclass(frozen=True)
class Target:
    """Where a container's probes go and how its exec probes run."""

    #: The pod's IP: httpGet and tcpSocket probes without ``host`` go here.
    host: str
    #: The container's spec (its named ports).
    container: Obj
    #: An exec probe's environment and working directory: the container's.
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    #: What goes before an exec probe's command (to enter the pod's namespaces).
    prefix: Sequence[str] = ()
    #: Opens a connection from the pod's network (None: from this machine's).
    connect: Callable[[str, int], Awaitable[socket.socket]] | None = None


def port_of(container: Obj, port: Any) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    return None


async def attempt(probe: Obj, target: Target) -> tuple[bool, str]:
    """Try ``probe`` once: (passed, what to say when it did not)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if (http := probe.get("httpGet")) is not None:
            return await _http(http, target, timeout)
        if (tcp := probe.get("tcpSocket")) is not None:
            return await _tcp(tcp, target, timeout)
        if (run := probe.get("exec")) is not None:
            return await _exec(run.get("command") or [], target, timeout)
        if probe.get("grpc") is not None:
            return False, "grpc probes are not supported by the stand-in kubelet"
    except TimeoutError:
        return False, f"context deadline exceeded (timeout {timeout:g}s)"
    return False, "the probe names no handler"


async def _open(
    target: Target, host: str, port: int, tls: bool, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async def opened() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if target.connect is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
        else:
            sock = await target.connect(host, port)
        try:
            if not tls:
                return await asyncio.open_connection(sock=sock)
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return await asyncio.open_connection(sock=sock, ssl=context, server_hostname=host)
        except BaseException:  # cancelled by the timeout or the pod's end: no stray socket
            sock.close()
            raise

    # asyncio.timeout cancels inside opened(), which closes its socket; wait_for (3.11) may
    # drop a connection that was made just as it gave up.
    async with asyncio.timeout(timeout):
        return await opened()


async def _http(spec: Obj, target: Target, timeout: float) -> tuple[bool, str]:
    port = port_of(target.container, spec.get("port"))
    if port is None:
        return False, f"unable to find port {spec.get('port')!r} in the container's ports"
    scheme = str(spec.get("scheme") or "HTTP").lower()
    host = spec.get("host") or target.host
    path = spec.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{host}:{port}{path}"
    headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.35", "Accept": "*/*"}
    for header in spec.get("httpHeaders") or []:
        headers[header["name"]] = header.get("value", "")
    headers["Connection"] = "close"
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    try:
        reader, writer = await _open(target, host, port, scheme == "https", timeout)
    except OSError as exc:
        return False, f'Get "{url}": dial tcp {host}:{port}: {_reason(exc)}'
    try:
        writer.write(request.encode() + b"\r\n")
        await writer.drain()
        async with asyncio.timeout(timeout):  # not wait_for: see Scheduler.run
            line = await reader.readline()
        parts = line.decode(errors="replace").split()
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f'Get "{url}": malformed HTTP response {line[:80]!r}'
        status = int(parts[1])
        if 200 <= status < 400:  # a redirect passes, as the kubelet reads one elsewhere
            return True, ""
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(timeout):
                rest = await reader.read(_MAX_OUTPUT)
            body = rest.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
            if body:
                return False, f"HTTP probe failed with statuscode: {status} {body}"
        return False, f"HTTP probe failed with statuscode: {status}"
    except OSError as exc:
        return False, f'Get "{url}": {_reason(exc)}'
    finally:
        writer.close()


async def _tcp(spec: Obj, target: Target, timeout: float) -> tuple[bool, str]:
    port = port_of(target.container, spec.get("port"))
    if port is None:
        return False, f"unable to find port {spec.get('port')!r} in the container's ports"
    host = spec.get("host") or target.host
    try:
        _, writer = await _open(target, host, port, False, timeout)
    except OSError as exc:
        return False, f"dial tcp {host}:{port}: {_reason(exc)}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def _exec(command: list[str], target: Target, timeout: float) -> tuple[bool, str]:
    if not command:
        return False, "the exec probe has no command"
    try:
        process = await asyncio.create_subprocess_exec(
            *target.prefix,
            *command,
            env=dict(target.env),
            cwd=target.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return False, f"exec: {exc}"
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return False, f"command timed out: {' '.join(command)!r} timed out after {timeout:g}s"
    except asyncio.CancelledError:  # the container ended meanwhile: leave nothing behind
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode == 0:
        return True, ""
    text = output[:_MAX_OUTPUT].decode(errors="replace").strip()
    return False, text or f"command {' '.join(command)!r} exited with {process.returncode}"


async def run_hook(handler: Obj, target: Target, timeout: float) -> tuple[bool, str]:
    """Run a lifecycle hook (``preStop``): ``sleep``, ``exec`` or ``httpGet``, for at
    most ``timeout`` seconds; (passed, what to say when it did not)."""
    if (sleep := handler.get("sleep")) is not None:
        await asyncio.sleep(min(float(sleep.get("seconds") or 0), timeout))
        return True, ""
    return await attempt({**handler, "timeoutSeconds": timeout}, target)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "i/o timeout"
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return "connect: connection refused"
    return str(exc) or type(exc).__name__


#: Called with (probe kind, passed) when a probe's result flips.
Changed = Callable[[str, bool], Awaitable[None]]
#: Called with (probe kind, message) at each failed try.
Failed = Callable[[str, str], Awaitable[None]]


class Prober:
    """The probes of one running container, started together and stopped together."""

    def __init__(self, container: Obj, target: Target, changed: Changed, failed: Failed) -> None:
        self.specs = {kind: container[kind] for kind in KINDS if container.get(kind)}
        self.target = target
        self._changed = changed
        self._failed = failed
        #: The current result of each probe (readiness starts failed, the others passed).
        self.results = {kind: kind != "readinessProbe" for kind in self.specs}
        self.started = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        """Whether the container is ready: started, and its readiness probe passing."""
        return self.started.is_set() and self.results.get("readinessProbe", True)

    def start(self) -> None:
        if "startupProbe" not in self.specs:
            self.started.set()
        self._tasks = [asyncio.create_task(self._work(kind)) for kind in self.specs]

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel the probes; the tasks, for a caller that must wait for them to end."""
        for task in self._tasks:
            task.cancel()
        return self._tasks

    async def _work(self, kind: str) -> None:
        spec = self.specs[kind]
        if kind != "startupProbe":
            await self.started.wait()
        await asyncio.sleep(float(spec.get("initialDelaySeconds") or 0))
        period = float(spec.get("periodSeconds") or 10)
        need_ok = int(spec.get("successThreshold") or 1)
        need_bad = int(spec.get("failureThreshold") or 3)
        loop = asyncio.get_running_loop()
        oks = bads = 0
        while True:
            began = loop.time()
            passed, message = await attempt(spec, self.target)
            if passed:
                oks, bads = oks + 1, 0
            else:
                oks, bads = 0, bads + 1
                await self._failed(kind, f"{_NAMES[kind]} probe failed: {message}")
            if kind == "startupProbe":
                if passed:  # successThreshold is 1 for startup probes
                    self.started.set()
                    await self._changed(kind, True)
                    return
                if bads >= need_bad:
                    self.results[kind] = False
                    await self._changed(kind, False)
                    return  # the container is killed; its next run gets new probes
            elif passed and not self.results[kind] and oks >= need_ok:
                self.results[kind] = True
                await self._changed(kind, True)
            elif not passed and self.results[kind] and bads >= need_bad:
                self.results[kind] = False
                await self._changed(kind, False)
                if kind == "livenessProbe":
                    return  # the container is killed; its next run gets new probes
            await asyncio.sleep(max(period - (loop.time() - began), 0.0))
