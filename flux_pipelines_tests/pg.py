"""A real PostgreSQL server for tests: initdb + pg_ctl on loopback, on a free port.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres``
OS user (they refuse to run as root). The server can be stopped and started again in the middle of a
test (crash-recovery tests take the database away from a running run).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

USER = "flux"
PASSWORD = "flux-test"


class PostgresUnavailable(RuntimeError):
    """The test PostgreSQL server could not be started (binaries, user or port)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


@dataclass
class PostgresServer:
    root: Path
    port: int = field(default_factory=_free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def _run(self, *args: str, timeout: float = 60) -> None:
        binary = shutil.which(args[0])
        if binary is None:
            raise PostgresUnavailable(f"{args[0]} not found on PATH (install PostgreSQL 15)")
        result = subprocess.run(
            _as_postgres([binary, *args[1:]]), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(args[:2])} failed: {result.stderr or result.stdout}"
            )

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
            "-A", "scram-sha-256", "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        binary = shutil.which("pg_ctl") or "pg_ctl"
        cmd = _as_postgres([binary, "-D", str(self.data), "status"])
        return subprocess.run(cmd, capture_output=True).returncode == 0

    def create_database(self, name: str) -> dict[str, str]:
        """A fresh database and the DAGSTER_PG_* settings that point at it."""
        conn = psycopg2.connect(self.dsn("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.env(name)

    def dsn(self, db: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} password={PASSWORD} dbname={db}"

    def env(self, db: str) -> dict[str, str]:
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": USER,
            "DAGSTER_PG_PASSWORD": PASSWORD,
            "DAGSTER_PG_DB": db,
        }

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def start_server() -> PostgresServer:
    root = Path(tempfile.mkdtemp(prefix="flux-pg-"))
    os.chmod(root, 0o755)
    server = PostgresServer(root)
    server.init()
    server.start()
    server.wait_ready()
    return server
