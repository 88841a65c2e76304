"""Where Flux keeps its state: resolved in one place, for every command and resource.

Precedence: an explicit home (a command's ``--home``, a resource's ``home``), then the
``FLUX_HOME`` environment variable, then ``<project>/.flux``. Everything that reads or
writes under the home (landing, warehouse, published, outbox, the audit trail, the Dagster
instance, fault points) asks this module, so a command run from another directory uses the
same trail the pipeline and the certification gate use.
"""

from __future__ import annotations

import os
from pathlib import Path

FLUX_HOME_ENV = "FLUX_HOME"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".flux"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Flux home as an absolute path: ``explicit``, else $FLUX_HOME, else the default."""
    chosen = explicit or os.environ.get(FLUX_HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()
