"""How a command stops on an error it can name: one line on stderr, a documented exit code.

One ``fail`` for every command (``flux``'s own in ``cli/`` and ``flux audit`` in
``audit/cli.py``): outside ``cli/`` so the audit package can use it without importing the
CLI that imports it. Typed ``NoReturn`` so the type checker knows the code after a call to
it never runs.
"""

from __future__ import annotations

from typing import NoReturn

import typer

USAGE_ERROR = 2  # a bad id, option or setting: the user can fix it and run again


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
