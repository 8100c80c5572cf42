"""``python -m durapod.api [--host H] [--port P]``: serve the API with uvicorn, and say
on stderr where once it listens (uvicorn's own startup lines are below the log level)."""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn

from durapod import logs
from durapod.api.app import create_app
from durapod.api.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn's server, announcing its address once the socket is bound (``--port 0``
    shows the port it was given)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        bound = [s.getsockname() for server in self.servers for s in server.sockets or []]
        host, port = bound[0][:2] if bound else (self.config.host, self.config.port)
        shown = f"[{host}]" if ":" in str(host) else host
        print(f"durapod api listening on http://{shown}:{port}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="durapod-api")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logs.setup("api")
    config = uvicorn.Config(
        create_app(Settings.from_env()),
        host=args.host,
        port=args.port,
        log_level="warning",
        log_config=None,  # uvicorn's records go to the root logger: JSON lines like ours
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
    server = _Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the startup failed (a port in use, the lifespan)


if __name__ == "__main__":
    main()
