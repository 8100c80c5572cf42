"""A private PostgreSQL server for ``durapod dev`` and the tests.

It runs Debian's server binaries on its own data directory and a free loopback port, and
stops with its owner. PostgreSQL refuses to run as root, so as root every server command
runs as the ``postgres`` user.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

DATABASE = "durapod"


def find_bindir() -> Path:
    """The newest installed server's bin directory (``DURAPOD_PG_BINDIR`` overrides)."""
    if override := os.environ.get("DURAPOD_PG_BINDIR"):
        return Path(override)
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if installed:
        return installed[-1].parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: install Debian's postgresql "
        "package (make setup does) or set DURAPOD_PG_BINDIR"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """One server: ``start()`` creates the cluster on first use, ``stop()`` shuts it down."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    #: Extra server settings, e.g. {"fsync": "off"} for throwaway test servers.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def _user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(find_bindir() / args[0]), *args[1:]],
            user=self._user,
            cwd="/",
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def _reachable_data_dir(self, user: str) -> None:
        """Move the data directory to the temp dir when ``user`` cannot reach it.

        A root-owned checkout (under /root, or a mktemp directory) is closed to the
        postgres user; a directory derived from the asked-for path keeps the data across
        restarts without changing the permissions of the user's own directories.
        """
        probe = subprocess.run(["test", "-x", str(self.data_dir)], user=user, cwd="/", check=False)
        if probe.returncode != 0:
            self.data_dir = self._relocated()

    def _relocated(self) -> Path:
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"durapod-postgres-{digest}"

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> str:
        """Start the server (initialising it first if need be); return the DSN of its database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            self._reachable_data_dir(self._user)
            entry = pwd.getpwnam(self._user)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        os.chmod(self.data_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            )
        if (self.data_dir / "postmaster.pid").exists():
            # A server left behind by an owner that was killed: stop it before starting anew.
            subprocess.run(
                [
                    str(find_bindir() / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "stop",
                    "-m",
                    "immediate",
                ],
                user=self._user,
                capture_output=True,
                check=False,
            )
        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.data_dir),
            "max_connections": "200",
            **self.settings,
        }
        flags = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} {flags}",
            "start",
        )
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE}")
        return self.dsn()

    def create_database(self, name: str) -> str:
        """A new empty database on this server; return its DSN."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "stop", "-m", mode, "-w")
