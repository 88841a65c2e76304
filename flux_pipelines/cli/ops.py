"""Operations commands: ``flux purge``, ``flux backup``, ``flux restore``.

Merged into the ``flux`` command (``app.add_typer(ops_app)``, no group name), so they read
as top-level commands. Heavy modules load inside each command.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from flux_pipelines.errors import BackupRefused, ConfigurationError, TransientError
from flux_pipelines.exits import fail
from flux_pipelines.home import resolve_home

ops_app = typer.Typer()

HomeOption = Annotated[
    Path | None,
    typer.Option(help="Flux home; default: $FLUX_HOME, else <project>/.flux"),
]


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@ops_app.command()
def purge(
    home: HomeOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, delete nothing")] = False,
    now: Annotated[
        str | None, typer.Option(help="Pretend today is this day, YYYY-MM-DD (UTC)")
    ] = None,
) -> None:
    """Delete what outlived its retention (contracts/retention.yaml, per-dataset overrides),
    never the last copy of a partition; every batch is recorded in the audit trail.

    Run it where no load runs (the scheduled `flux_purge` job holds each agency's run slot);
    here each agency file is opened with the loads' own lock and bounded wait.
    Exit code: 0 done (or nothing to do), 2 refused (configuration), 3 a lock or storage
    stayed unavailable.
    """
    from flux_pipelines.ops.purge import purge_home

    try:
        when = dt.date.fromisoformat(now) if now else dt.datetime.now(dt.UTC).date()
    except ValueError:
        fail(f"--now {now!r} is not YYYY-MM-DD")
    try:
        deletions, skipped = purge_home(resolve_home(home), now=when, dry_run=dry_run)
    except ConfigurationError as exc:
        fail(str(exc))
    except TransientError as exc:
        fail(str(exc), code=3)
    verb = "would delete" if dry_run else "deleted"
    for d in deletions:
        typer.echo(f"{verb} {d.describe()}")
    for k in skipped:
        typer.echo(f"kept {k.describe()}")
    typer.echo(
        f"{len(deletions)} item(s) {'to delete (dry run)' if dry_run else 'deleted'}; "
        f"{len(skipped)} expired but kept (last copy)"
    )


@ops_app.command()
def backup(
    to: Annotated[Path, typer.Option("--to", help="New or empty folder for the backup")],
    home: HomeOption = None,
    lock_wait: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for a running load per agency file")
    ] = 120.0,
) -> None:
    """Write a consistent snapshot of a home while loads may be running.

    Agency DuckDB files (each under its lock: a load is wholly in or out), raw Parquet,
    receipts, models, published copies, reports, the audit trail and its anchors, state/
    (with the PII key), the contracts in force, and the Dagster run storage (SQLite online
    backup, or pg_dump when DAGSTER_PG_HOST is set); MANIFEST.json is written last.
    Exit code: 0 written, 2 refused, 3 a lock or the database stayed unavailable.
    """
    from flux_pipelines.ops.backup import backup as run_backup

    try:
        summary = run_backup(resolve_home(home), to, lock_wait_seconds=lock_wait)
    except (ConfigurationError, BackupRefused) as exc:
        fail(str(exc))
    except TransientError as exc:
        fail(str(exc), code=3)
    typer.echo(
        f"backup {summary.path}: {summary.files} files, {_mib(summary.bytes)}, "
        f"{len(summary.tables)} agency file(s), {summary.rows} rows, audit trail at seq "
        f"{summary.trail_seq}, run storage {summary.storage}, {summary.seconds:.1f}s "
        f"(waited {summary.waited_seconds:.1f}s for locks)"
    )


@ops_app.command()
def restore(
    source: Annotated[Path, typer.Option("--from", help="A backup folder (with MANIFEST.json)")],
    home: Annotated[Path, typer.Option(help="The new, empty Flux home to rebuild")],
) -> None:
    """Rebuild a home from a backup, then check rows per table and the audit trail.

    Refuses a backup whose files do not match its manifest and a non-empty target. With
    DAGSTER_PG_HOST set, the run storage is restored into that (empty) database.
    Exit code: 0 restored and verified, 2 refused, 3 the database was unavailable.
    """
    from flux_pipelines.ops.backup import restore as run_restore

    try:
        summary = run_restore(source, resolve_home(home))
    except (ConfigurationError, BackupRefused) as exc:
        fail(str(exc))
    except TransientError as exc:
        fail(str(exc), code=3)
    for note in summary.notes:
        typer.echo(f"notice: {note}")
    typer.echo(
        f"restored {summary.path}: {summary.files} files, {_mib(summary.bytes)}, "
        f"{summary.rows} rows in {len(summary.tables)} agency file(s) match the manifest, "
        f"audit trail verifies (seq {summary.trail_seq}), run storage {summary.storage}, "
        f"{summary.seconds:.1f}s"
    )
