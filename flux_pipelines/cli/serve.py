"""``flux serve``: the authenticated intake service, run by uvicorn.

FastAPI and uvicorn are imported when the command runs, not when ``flux`` starts, so
``flux --help`` and every other command stay as fast as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.exits import fail
from flux_pipelines.home import resolve_home


def serve(
    home: Annotated[
        Path | None,
        typer.Option(help="Flux home (landing/, outbox/, published/, audit/); default $FLUX_HOME"),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on")] = 8080,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM); with --ssl-keyfile")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
    max_bytes: Annotated[
        int | None,
        typer.Option(min=1, help="Largest upload in bytes (default $FLUX_INTAKE_MAX_BYTES, 2 GiB)"),
    ] = None,
) -> None:
    """Run the intake service: agencies upload deliveries and read their reports, analysts
    read published rows; every request needs an OIDC bearer token (FLUX_OIDC_* settings).

    Without TLS options it speaks plain HTTP: keep it on loopback behind a TLS proxy.
    """
    import uvicorn

    from flux_pipelines.intake.app import create_app

    if (ssl_certfile is None) != (ssl_keyfile is None):
        fail("--ssl-certfile and --ssl-keyfile go together")
    try:
        application = create_app(resolve_home(home), max_bytes=max_bytes)
    except ConfigurationError as exc:
        fail(str(exc))
    uvicorn.run(
        application,
        host=host,
        port=port,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        server_header=False,
        log_level="info",
    )
