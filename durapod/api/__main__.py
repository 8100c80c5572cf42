"""``python -m durapod.api [--host H] [--port P]``: serve the API with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from durapod.api.app import create_app
from durapod.api.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="durapod-api")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(
        create_app(Settings.from_env()),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
