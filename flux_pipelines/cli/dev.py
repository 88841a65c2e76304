"""``flux dev``: Dagster's webserver and daemon on loopback, stopped cleanly by Ctrl-C or SIGTERM.

Flux starts Dagster's own public commands, the way ``dagster dev`` does: one code server
(``dagster code-server start`` for the code location of ``workspace.yaml``, on a Unix
socket in a private temporary folder), then ``dagster-webserver`` and ``dagster-daemon run``
on a workspace naming that server, so definitions load once for both; a reload in the UI
reloads the code server, and the daemon picks the new definitions up on its next workspace
refresh (within a minute), so an edited contract reaches sensors and schedules without a
restart. The webserver and daemon start once the code server answers gRPC health checks
as serving (its definitions loaded); a code server that exits first, or serves nothing
within ``CODE_SERVER_TIMEOUT``, stops ``flux dev`` with exit code 1 and the reason. Every
service runs in its own session, so a terminal's Ctrl-C reaches ``flux dev`` alone and
``flux dev`` decides the order of the stop. On Ctrl-C or SIGTERM it sends SIGTERM to each
service (Dagster's services stop their code servers on it the way they do on Ctrl-C), then
SIGTERM to anything left in their process groups, and SIGKILL to whatever still runs after
``STOP_TIMEOUT``. When a service exits on its own, ``flux dev`` stops the others and exits 1
saying which one died.

Signal dispositions: a script's background job (``cmd &``) starts with SIGINT ignored, and a
child inherits an ignored signal across exec; Dagster's services then ignore SIGTERM too
(they give SIGTERM SIGINT's handler). ``flux dev`` installs its own SIGINT/SIGTERM handlers
before it starts any child, and a caught signal is reset to its default at exec, so every
service starts with the default dispositions.

Beside them, unless turned off, ``flux metrics`` (the Prometheus exporter, /metrics, /healthz,
/readyz) runs the same way, but its exit stops nothing else (metrics are an observer, not a
service the pipeline needs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil
import typer
import yaml

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.home import PROJECT_ROOT
from flux_pipelines.instance.config import prepare_dagster_home

STOP_TIMEOUT = 60.0
CODE_SERVER_TIMEOUT = 300.0  # definitions load in seconds here; give a slow VM minutes
POLL_SECONDS = 0.5
METRICS_PORT_ENV = "FLUX_DEV_METRICS_PORT"
DEFAULT_METRICS_PORT = 9464
CODE_SERVER_LOG_LEVEL = "warning"  # what ``dagster dev`` passes: user-code warnings, no chatter


def dagster_script(name: str) -> str:
    """The path of a console script installed beside this interpreter (``dagster-webserver``):
    the one that belongs to this environment, whatever PATH says."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.is_file():
        raise ConfigurationError(
            f"{name} is not installed in this environment ({path}); install dagster-webserver "
            "(it brings dagster-daemon too)"
        )
    return str(path)


def log_format_args() -> list[str]:
    """With FLUX_LOG_FORMAT=json Dagster's services log JSON too, so the whole stream is JSON
    lines (runs: ``ops/logs.py``)."""
    from flux_pipelines.ops.logs import json_logs

    return ["--log-format", "json"] if json_logs() else []


def workspace_location() -> tuple[str, str]:
    """(module, location name) of the project's ``workspace.yaml``: the code location
    ``flux dev`` serves is the one the workspace file names, not a second copy of it."""
    path = PROJECT_ROOT / "workspace.yaml"
    try:
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))["load_from"][0]["python_module"]
        return str(entry["module_name"]), str(entry["location_name"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise ConfigurationError(
            f"{path}: flux dev needs one python_module entry with module_name and "
            f"location_name under load_from ({type(exc).__name__}: {exc})"
        ) from exc


def code_server_command(socket_path: Path) -> list[str]:
    module, location = workspace_location()
    return [
        dagster_script("dagster"), "code-server", "start",
        "-m", module, "--location-name", location,
        "--socket", str(socket_path),
        "--log-level", CODE_SERVER_LOG_LEVEL,
        *log_format_args(),
    ]  # fmt: skip


def write_served_workspace(folder: Path, socket_path: Path) -> Path:
    """A workspace file naming the running code server (the webserver's and daemon's -w)."""
    _, location = workspace_location()
    served = {
        "load_from": [{"grpc_server": {"socket": str(socket_path), "location_name": location}}]
    }
    path = folder / "workspace.yaml"
    path.write_text(yaml.safe_dump(served), encoding="utf-8")
    return path


def code_server_serving(socket_path: Path) -> bool:
    """Whether the code server answers the standard gRPC health check as serving (it
    serves once its definitions are loaded)."""
    if not socket_path.exists():
        return False
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = health_pb2.HealthCheckRequest(service="DagsterApi")
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=2)
    except grpc.RpcError:  # not listening yet, or going away: not serving
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_for_code_server(
    service: Service, socket_path: Path, stop: threading.Event, timeout: float
) -> str | None:
    """Until the code server serves or a stop is requested (None), or why it never will."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        if service.process.poll() is not None:
            return f"{service.name} exited with code {service.process.returncode} before serving"
        if code_server_serving(socket_path):
            return None
        if time.monotonic() > deadline:
            return f"{service.name} did not serve its definitions within {timeout:.0f}s"
        stop.wait(0.2)
    return None


def webserver_command(host: str, port: int, workspace: Path) -> list[str]:
    return [
        dagster_script("dagster-webserver"),
        "-w", str(workspace),
        "-h", host, "-p", str(port),
        *log_format_args(),
    ]  # fmt: skip


def daemon_command(workspace: Path) -> list[str]:
    return [
        dagster_script("dagster-daemon"), "run",
        "-w", str(workspace),
        *log_format_args(),
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


@dataclass
class Service:
    """One child of ``flux dev``, leader of its own session and process group."""

    name: str
    process: subprocess.Popen[bytes]
    essential: bool  # its exit stops flux dev (the exporter's does not)

    @classmethod
    def start(cls, name: str, command: list[str], *, essential: bool = True) -> Service:
        return cls(name, subprocess.Popen(command, start_new_session=True), essential)

    @property
    def pgid(self) -> int:
        return self.process.pid  # a session leader's group id is its pid

    def group_alive(self) -> bool:
        """Whether a live (non-zombie) process is left in the group, the leader included:
        a code server may outlive the service that started it."""
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getpgid(proc.pid) == self.pgid and proc.info["status"] != "zombie":
                    return True
            except (ProcessLookupError, PermissionError):
                continue
        return False

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group has gone
            os.killpg(self.pgid, signum)


def run_dev(home: Path, host: str, port: int, metrics_port: int | str | None = "env") -> int:
    """``metrics_port``: the exporter's port; None: no exporter; "env": from
    ``FLUX_DEV_METRICS_PORT``. Returns the exit code: 0 after a requested stop, 1 when a
    service died on its own or had to be killed."""
    if metrics_port == "env":
        metrics_port = metrics_port_setting()
    info = prepare_dagster_home(home)
    typer.echo(info.describe())
    create_storage()
    typer.echo(f"FLUX_HOME={home}; UI on http://{host}:{port} (Ctrl-C stops everything)")
    stop = install_stop_handlers()  # before any child starts: they inherit default dispositions
    services: list[Service] = []
    failure: str | None = None
    with tempfile.TemporaryDirectory(prefix="flux-dev-") as scratch:
        socket_path = Path(scratch) / "code-server.sock"
        workspace = write_served_workspace(Path(scratch), socket_path)
        try:
            if metrics_port is not None:
                services.append(
                    Service.start(
                        "flux metrics",
                        metrics_command(home, host, int(metrics_port)),
                        essential=False,
                    )
                )
                typer.echo(
                    f"metrics on http://{host}:{metrics_port}/metrics (/healthz, /readyz; "
                    f"{METRICS_PORT_ENV}=off: none)"
                )
            code_server = Service.start("dagster code-server", code_server_command(socket_path))
            services.append(code_server)
            failure = wait_for_code_server(code_server, socket_path, stop, CODE_SERVER_TIMEOUT)
            if failure is None and not stop.is_set():
                services.append(
                    Service.start("dagster-webserver", webserver_command(host, port, workspace))
                )
                services.append(Service.start("dagster-daemon", daemon_command(workspace)))
                died = supervise(services, stop)
                if died is not None:
                    failure = f"{died.name} exited on its own with code {died.process.returncode}"
        finally:
            clean = shut_down(services)
    if failure is not None:
        typer.echo(f"{failure}; stopped the other services", err=True)
        return 1
    return 0 if clean else 1


def create_storage() -> None:
    """Create the instance's storage (its schema) before the services start: the webserver
    and the daemon would otherwise both create a new SQLite storage at once, and the loser
    exits ("table alembic_version already exists")."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    try:  # a read of each store creates its tables (SQLite's event index on first use)
        instance.get_runs(limit=1)
        instance.fetch_materializations(dg.AssetKey("flux_dev"), limit=1)
        instance.all_instigator_state()
    finally:
        instance.dispose()


def install_stop_handlers() -> threading.Event:
    """SIGINT and SIGTERM set the returned event (the supervising loop stops everything)."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        typer.echo(f"\n{signal.Signals(signum).name}: stopping the webserver and daemon...")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    return stop


def supervise(services: list[Service], stop: threading.Event) -> Service | None:
    """Until a stop is requested (None) or an essential service exits (that service)."""
    while not stop.wait(POLL_SECONDS):
        for service in services:
            if service.essential and service.process.poll() is not None:
                return service
    return None


def shut_down(services: list[Service], timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM every service, then what is left in their groups once the leader has exited;
    SIGKILL every group still alive after ``timeout``. True when nothing had to be killed
    and every service that was still running exited on the request."""
    running = [s for s in services if s.process.poll() is None]
    for service in running:
        service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pending = list(services)
    swept: set[int] = set()
    while pending and time.monotonic() < deadline:
        for service in list(pending):
            if service.process.poll() is None:
                continue
            if service.pgid not in swept:  # its leader is gone: ask the rest of the group
                service.signal_group(signal.SIGTERM)
                swept.add(service.pgid)
            if not service.group_alive():
                pending.remove(service)
        if pending:
            time.sleep(0.2)
    for service in pending:
        typer.echo(f"{service.name} did not stop within {timeout:.0f}s; killing it", err=True)
        service.signal_group(signal.SIGKILL)
        service.process.wait()
    return not pending and all(stopped_cleanly(s.process.returncode) for s in running)


def stopped_cleanly(returncode: int | None) -> bool:
    """Exit code 0, or ended by the SIGTERM that asked it to stop."""
    return returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
