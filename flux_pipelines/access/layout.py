"""Move a whole home out of the layout before per-agency folders, once, before isolating.

Each agency's working file used to lie at ``warehouse/<agency>.duckdb``, beside the others,
and its load receipts in ``warehouse/<agency>/receipts/``. Per-agency mounts need both in
the agency's own folders (``names.py``). On one host the first open of an agency's file
moves them (``FluxWarehouse.migrate_layout``) and so does ``flux access apply``; where a
run pod mounts only ``warehouse/<agency>/`` the old file is out of its sight, so a
deployment runs this once, with the whole home mounted, before its first isolated run, and
again after onboarding an agency: it also makes every folder an agency's run pod mounts
(``run_pods.agency_run_mounts``), so the kubelet never creates one as root::

    python -m flux_pipelines.access.layout --home /var/lib/flux [--check]

Exit code: 0 nothing left to do, 1 ``--check`` found something to move or a folder missing,
2 a configuration problem (both layouts hold a working file, a link where a folder
belongs), 3 an agency's file stayed locked (a run holds it: run again).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from flux_pipelines.errors import ConfigurationError, StorageNotConfined, TransientError
from flux_pipelines.home import resolve_home
from flux_pipelines.names import agencies_with_db


def home_agencies(home: Path, registered: Iterable[str]) -> list[str]:
    """The registered agencies and every agency with a working file in either layout."""
    return sorted(set(registered) | set(agencies_with_db(home)))


def old_layout(home: Path, agencies: Iterable[str]) -> list[Path]:
    """What of ``agencies`` still lies where the old layout kept it."""
    from flux_pipelines.resources.warehouse import FluxWarehouse

    warehouse = FluxWarehouse(home=str(home))
    return [path for agency in agencies for path in warehouse.old_layout(agency)]


def missing_run_folders(home: Path, agencies: Iterable[str]) -> list[Path]:
    """Folders a run pod of one of ``agencies`` mounts that do not exist yet."""
    from flux_pipelines.access.run_pods import agency_run_mounts

    wanted = {home / m.sub_path for agency in agencies for m in agency_run_mounts(agency)}
    return sorted(path for path in wanted if not path.is_dir())


def ensure_run_folders(home: Path, agencies: Iterable[str]) -> list[Path]:
    """Make the missing run-pod folders (owner only: ``flux access apply`` opens the shared
    ones to their groups on a host); returns those made. A link is refused, not followed."""
    from flux_pipelines.home import confined

    made = []
    for path in missing_run_folders(home, agencies):
        zone, *below = path.relative_to(home).parts  # the zone itself may be a link (a volume)
        confined(home / zone, *below).mkdir(mode=0o700, parents=True)
        made.append(path)
    return made


def migrate_home(home: Path, agencies: Iterable[str]) -> list[str]:
    """Move every agency's old layout (idempotent); one line per move."""
    from flux_pipelines.resources.warehouse import FluxWarehouse

    warehouse = FluxWarehouse(home=str(home))
    return [line for agency in agencies for line in warehouse.migrate_layout(agency)]


def main(argv: list[str] | None = None) -> int:
    from flux_pipelines.contracts.registry import load_registry

    parser = argparse.ArgumentParser(
        prog="python -m flux_pipelines.access.layout",
        description="Move a Flux home's agencies into per-agency folders (idempotent).",
    )
    parser.add_argument("--home", help="the Flux home (default: $FLUX_HOME, else .flux)")
    parser.add_argument("--check", action="store_true", help="only list what would move")
    args = parser.parse_args(argv)
    home = resolve_home(args.home)
    try:
        agencies = home_agencies(home, (a.id for a in load_registry().agencies))
        if args.check:
            found = old_layout(home, agencies)
            for path in found:
                print(f"{path}: layout before per-agency folders")
            missing = missing_run_folders(home, agencies)
            for path in missing:
                print(f"{path}: missing (a run pod mounts it)")
            return 1 if found or missing else 0
        for line in migrate_home(home, agencies):
            print(f"moved {line}")
        for path in ensure_run_folders(home, agencies):
            print(f"made {path}")
    except (ConfigurationError, StorageNotConfined) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TransientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"{home}: every agency in its own folders ({len(agencies)} agencies)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
