"""Where Flux keeps its state: resolved in one place, for every command and resource.

Precedence: an explicit home (a command's ``--home``, a resource's ``home``), then the
``FLUX_HOME`` environment variable, then ``<project>/.flux``. Everything that reads or
writes under the home (landing, warehouse, published, outbox, the audit trail, the Dagster
instance, fault points) asks this module, so a command run from another directory uses the
same trail the pipeline and the certification gate use.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flux_pipelines.errors import StorageNotConfined

FLUX_HOME_ENV = "FLUX_HOME"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".flux"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Flux home as an absolute path: ``explicit``, else $FLUX_HOME, else the default."""
    chosen = explicit or os.environ.get(FLUX_HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def confined(zone: Path, *parts: str) -> Path:
    """``zone/<parts...>``, refused if any of its existing parts is a symbolic link.

    An agency's files (its DuckDB file, raw Parquet, receipts, models, published copies)
    are written only inside the zone's real folders: a link planted at an agency's folder
    or file would make Flux write, or an analyst read, somewhere else. The zone itself
    (``warehouse/``, ``published/``) may be a link: the operator's choice of volume.
    """
    path = zone
    for part in parts:
        path = path / part
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except FileNotFoundError:
            return zone.joinpath(*parts)  # nothing below exists yet: made as real folders
        if is_link:
            raise StorageNotConfined(str(path), os.readlink(path))
    return path
