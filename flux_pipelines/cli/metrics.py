"""``flux metrics``: the Prometheus exporter of a Flux home, with liveness and readiness.

``/metrics`` is computed at scrape time from the stores (flux_pipelines/ops/metrics.py);
``/healthz`` answers 200 while the process runs; ``/readyz`` answers 200, or 503 with the
failing checks as JSON (flux_pipelines/ops/health.py). A threaded WSGI server from the
standard library (prometheus-client's own): no extra moving part, and a slow scrape does
not block a probe.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.home import resolve_home

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    import dagster as dg

    from flux_pipelines.ops.health import Problem

StartResponse = Callable[..., Any]


def open_instance(home: Path) -> dg.DagsterInstance:
    """The home's Dagster instance: $DAGSTER_HOME when it holds a dagster.yaml (a container
    whose instance settings are baked in, the home mounted read-only), else the one
    `flux` prepares under <home>/dagster_home (SQLite, or PostgreSQL with DAGSTER_PG_HOST)."""
    import dagster as dg

    from flux_pipelines.instance.config import prepare_dagster_home

    configured = os.environ.get("DAGSTER_HOME")
    if not (configured and (Path(configured) / "dagster.yaml").is_file()):
        prepare_dagster_home(home)
    return dg.DagsterInstance.get()


def make_app(
    metrics_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
    ready: Callable[[], list[Problem]],
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """Route /metrics, /healthz and /readyz; 404 for anything else."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "alive"})
        if path == "/readyz":
            try:
                problems = ready()
            except Exception as exc:  # a check that crashes is a failing check, said so
                problems = []
                body = {"status": "not ready", "problems": [
                    {"check": "readiness", "reason": f"{type(exc).__name__}: {exc}"}
                ]}  # fmt: skip
                return _json(start_response, "503 Service Unavailable", body)
            if problems:
                body = {"status": "not ready", "problems": [p.as_dict() for p in problems]}
                return _json(start_response, "503 Service Unavailable", body)
            return _json(start_response, "200 OK", {"status": "ready", "problems": []})
        return _json(start_response, "404 Not Found", {"error": f"no such path {path}"})

    return app


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def build_server(
    home: Path,
    instance: dg.DagsterInstance,
    host: str,
    port: int,
    *,
    sensor_stale_seconds: float,
    check_home_writable: bool,
    now: Callable[[], Any] | None = None,
) -> WSGIServer:
    """The exporter's server, bound (port 0: any free port) but not yet serving."""
    from wsgiref.simple_server import make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

    from flux_pipelines.ops.health import AuditCache, ReadinessSettings, readiness
    from flux_pipelines.ops.metrics import FluxCollector

    audit = AuditCache(home)
    settings = ReadinessSettings(sensor_stale_seconds, check_home_writable)
    lock = threading.Lock()  # one Dagster instance: probes and scrapes take turns

    def ready() -> list[Problem]:
        with lock:
            return readiness(home, instance, settings, audit)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FluxCollector(home, instance, readiness=ready, audit=audit, now=now))
    app = make_app(make_wsgi_app(registry), ready)
    return make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)


def metrics(
    home: Annotated[
        Path | None,
        typer.Option(help="Flux home; default: $FLUX_HOME, else <project>/.flux"),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (9464: the OpenTelemetry/Prometheus one)")] = 9464,
    sensor_stale_seconds: Annotated[
        float, typer.Option(help="Readiness fails when a running sensor has not ticked for this")
    ] = 600.0,
    check_home_writable: Annotated[
        bool,
        typer.Option(
            help="Readiness tries to write the home (turn off where the exporter mounts it "
            "read-only)"
        ),
    ] = True,
) -> None:
    """Serve Prometheus metrics of the home (/metrics), liveness (/healthz) and readiness
    (/readyz: 503 with the reasons as JSON). It reads Dagster's instance, receipts, the
    published scorecards and the audit trail; it never opens an agency's DuckDB file."""
    resolved = resolve_home(home)
    try:
        instance = open_instance(resolved)
        server = build_server(
            resolved, instance, host, port,
            sensor_stale_seconds=sensor_stale_seconds, check_home_writable=check_home_writable,
        )  # fmt: skip
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    bound = server.server_address[1]
    typer.echo(f"flux metrics for {resolved} on http://{host}:{bound}/metrics (/healthz, /readyz)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        instance.dispose()
