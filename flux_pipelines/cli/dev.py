"""``flux dev``: Dagster's webserver and daemon on loopback, stopped cleanly by Ctrl-C or SIGTERM.

``dagster dev`` started from a script ignores SIGINT (a background job inherits SIG_IGN)
and dies on SIGTERM without stopping its webserver, daemon and code servers. Here it runs
in its own session with Dagster's shutdown pipe: Ctrl-C or SIGTERM to ``flux dev`` writes
the shutdown message, ``dagster dev`` stops its services the way it does on Ctrl-C, and
the whole process group is killed only if that takes longer than ``STOP_TIMEOUT``.

Beside it, unless turned off, ``flux metrics`` (the Prometheus exporter, /metrics, /healthz,
/readyz) runs as a child in its own session: stopped with SIGTERM (killed after
``STOP_TIMEOUT``) when ``flux dev`` stops, and its exit stops nothing else (metrics are
an observer, not a service the pipeline needs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

import typer
from dagster_shared.ipc import get_ipc_shutdown_pipe, open_ipc_subprocess, send_ipc_shutdown_message

from flux_pipelines.contracts.registry import PROJECT_ROOT
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.instance.config import prepare_dagster_home

STOP_TIMEOUT = 60.0
METRICS_PORT_ENV = "FLUX_DEV_METRICS_PORT"
DEFAULT_METRICS_PORT = 9464


def dev_command(host: str, port: int, read_fd: int) -> list[str]:
    """``dagster dev``; with FLUX_LOG_FORMAT=json its own services (webserver, daemon, code
    server) log JSON too, so the whole stream is JSON lines (runs: ``ops/logs.py``)."""
    from flux_pipelines.ops.logs import json_logs

    return [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(PROJECT_ROOT / "workspace.yaml"),
        "-h", host, "-p", str(port),
        "--shutdown-pipe", str(read_fd),
        *(["--log-format", "json"] if json_logs() else []),
    ]  # fmt: skip


def metrics_command(home: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "flux_pipelines.cli.main", "metrics",
        "--home", str(home), "--host", host, "--port", str(port),
    ]  # fmt: skip


def metrics_port_setting() -> int | None:
    """The exporter's port from ``FLUX_DEV_METRICS_PORT`` (default 9464; ``off``: none)."""
    raw = os.environ.get(METRICS_PORT_ENV, str(DEFAULT_METRICS_PORT)).strip().lower()
    if raw in ("off", "0", "no", "false", ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(
            f"{METRICS_PORT_ENV}={raw!r}: a port number, or 'off' for no metrics exporter"
        ) from None


def run_dev(home: Path, host: str, port: int, metrics_port: int | str | None = "env") -> int:
    """``metrics_port``: the exporter's port; None: no exporter; "env": from
    ``FLUX_DEV_METRICS_PORT``."""
    if metrics_port == "env":
        metrics_port = metrics_port_setting()
    info = prepare_dagster_home(home)
    typer.echo(info.describe())
    typer.echo(f"FLUX_HOME={home}; UI on http://{host}:{port} (Ctrl-C stops everything)")
    exporter = None
    if metrics_port is not None:
        exporter = subprocess.Popen(
            metrics_command(home, host, int(metrics_port)), start_new_session=True
        )
        typer.echo(
            f"metrics on http://{host}:{metrics_port}/metrics (/healthz, /readyz; "
            f"{METRICS_PORT_ENV}=off: none)"
        )
    read_fd, write_fd = get_ipc_shutdown_pipe()
    process = open_ipc_subprocess(
        dev_command(host, port, read_fd), pass_fds=[read_fd], start_new_session=True
    )
    os.close(read_fd)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        typer.echo(f"\n{signal.Signals(signum).name}: stopping the webserver and daemon...")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    while process.poll() is None and not stop.wait(0.5):
        pass
    try:
        return shut_down(process, write_fd)
    finally:
        if exporter is not None:
            stop_exporter(exporter)


def stop_exporter(exporter: subprocess.Popen[bytes]) -> None:
    """SIGTERM the exporter's session, SIGKILL it after STOP_TIMEOUT."""
    if exporter.poll() is not None:
        return
    os.killpg(exporter.pid, signal.SIGTERM)
    try:
        exporter.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(exporter.pid, signal.SIGKILL)
        exporter.wait()


def shut_down(process: subprocess.Popen[bytes], write_fd: int) -> int:
    if process.poll() is not None:
        os.close(write_fd)
        return process.returncode
    send_ipc_shutdown_message(write_fd)  # closes write_fd
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        typer.echo(f"dagster dev did not stop within {STOP_TIMEOUT:.0f}s; killing it", err=True)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return 1
    return process.returncode
