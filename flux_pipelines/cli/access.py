"""``flux access``: apply and verify the read isolation of a Flux home (POSIX groups, modes).

Mounted by the main command as ``app.add_typer(access_app, name="access")``. The layout
itself lives in ``flux_pipelines/access/permissions.py``; the group names in the ``posix``
section of ``contracts/access.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flux_pipelines.errors import FluxError
from flux_pipelines.exits import fail
from flux_pipelines.home import resolve_home

access_app = typer.Typer(
    help="Read isolation of the Flux home: who may read which folder (POSIX groups, modes).",
    no_args_is_help=True,
)

HomeOption = Annotated[
    Path | None,
    typer.Option(help="Flux home; default: $FLUX_HOME, else <project>/.flux"),
]
AgencyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--agency",
        help="Only this agency (repeatable); default: every registered agency. Other "
        "registered agencies' folders are left as they are.",
    ),
]
SHOWN = 50  # findings printed before "... and N more"


def _agencies(only: list[str] | None) -> tuple[list[str], list[str]]:
    """(agencies to secure, registered agencies left as they are); unknown ids exit 2."""
    from flux_pipelines.contracts.registry import load_registry

    registered = [a.id for a in load_registry().agencies]
    chosen = only or registered
    unknown = sorted(set(chosen) - set(registered))
    if unknown:
        fail(f"unknown agency id(s) {', '.join(unknown)}; registered: {', '.join(registered)}")
    return chosen, [a for a in registered if a not in chosen]


def _list(title: str, lines: list[str]) -> None:
    if not lines:
        return
    typer.echo(f"{title} ({len(lines)}):")
    for line in lines[:SHOWN]:
        typer.echo(f"  {line}")
    if len(lines) > SHOWN:
        typer.echo(f"  ... and {len(lines) - SHOWN} more")


@access_app.command("apply")
def apply(
    home: HomeOption = None,
    create_groups: Annotated[
        bool, typer.Option(help="Create missing POSIX groups with groupadd (root only)")
    ] = False,
    owner: Annotated[
        str | None, typer.Option(help="The pipeline's user (default: the home's owner)")
    ] = None,
    agency: AgencyOption = None,
) -> None:
    """Give every folder of the home its group and mode; idempotent.

    Exit code: 0 applied, 1 something was refused (a symbolic link or special file, an
    entry this user may not change), 2 configuration (a group missing, unknown agency).
    """
    from flux_pipelines.access.permissions import secure_home

    chosen, left = _agencies(agency)
    root = resolve_home(home)
    try:
        outcome = secure_home(root, chosen, create_groups=create_groups, owner=owner, leave=left)
    except FluxError as exc:  # configuration: a group missing, a bad policy
        fail(str(exc))
    _list("groups created", outcome.groups_created)
    _list("layout", outcome.zones)
    _list("changed", outcome.changes)
    _list("refused (not followed, not changed)", outcome.refused)
    typer.echo(
        f"{root}: {len(outcome.changes)} change(s), {len(outcome.refused)} refused, "
        f"{len(chosen)} agencies"
    )
    raise typer.Exit(1 if outcome.refused else 0)


@access_app.command("check")
def check(
    home: HomeOption = None,
    owner: Annotated[
        str | None, typer.Option(help="The pipeline's user (default: the home's owner)")
    ] = None,
    agency: AgencyOption = None,
) -> None:
    """Report every path that differs from the layout (readable by others, wrong group or
    owner, missing folder, a link or special file); changes nothing.

    Exit code: 0 the home is isolated, 1 violations (listed), 2 configuration.
    """
    from flux_pipelines.access.permissions import secure_home

    chosen, left = _agencies(agency)
    root = resolve_home(home)
    try:
        outcome = secure_home(root, chosen, fix=False, owner=owner, leave=left)
    except FluxError as exc:  # configuration: a group missing, a bad policy
        fail(str(exc))
    _list("violations", outcome.changes + outcome.refused)
    if not outcome.clean:
        typer.echo(f"{root}: not isolated; fix with `flux access apply --home {root}`")
        raise typer.Exit(1)
    typer.echo(f"{root}: isolated ({len(chosen)} agencies)")
