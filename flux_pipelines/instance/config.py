"""Which storage a Dagster instance uses, and the DAGSTER_HOME that `flux` commands prepare.

The project's ``dagster.yaml`` is the one source of truth for the instance. With
``DAGSTER_PG_HOST`` set, it is used as written (PostgreSQL storage read through ``env:``);
without it, its ``storage:`` section is dropped so Dagster falls back to its embedded
SQLite storage under DAGSTER_HOME: a first run needs no server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.home import PROJECT_ROOT

PG_ENV = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)
PG_DEFAULTS = {"DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_PASSWORD": ""}
INSTANCE_TEMPLATE = PROJECT_ROOT / "dagster.yaml"


@dataclass(frozen=True)
class InstanceInfo:
    dagster_home: Path
    storage: str  # "postgres" | "sqlite"
    location: str  # where the run state lives, for people

    def describe(self) -> str:
        return (
            f"Dagster storage: {self.storage} ({self.location}); DAGSTER_HOME={self.dagster_home}"
        )


def postgres_configured() -> bool:
    return bool(os.environ.get("DAGSTER_PG_HOST"))


def postgres_env() -> dict[str, str]:
    """The DAGSTER_PG_* settings with defaults filled in; fails on a missing user."""
    values = {name: os.environ.get(name, PG_DEFAULTS.get(name, "")) for name in PG_ENV}
    if not values["DAGSTER_PG_USER"]:
        raise ConfigurationError(
            "DAGSTER_PG_HOST is set but DAGSTER_PG_USER is not: set DAGSTER_PG_USER (and "
            "DAGSTER_PG_PASSWORD, DAGSTER_PG_PORT, DAGSTER_PG_DB), or unset DAGSTER_PG_HOST to "
            "use the embedded SQLite storage"
        )
    return values


def instance_config(*, postgres: bool) -> dict[str, Any]:
    """The instance settings from the project's dagster.yaml, for one storage choice."""
    try:
        config = yaml.safe_load(INSTANCE_TEMPLATE.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(
            f"cannot read the instance settings {INSTANCE_TEMPLATE}: {exc}"
        ) from exc
    if not isinstance(config, dict):
        raise ConfigurationError(
            f"instance settings {INSTANCE_TEMPLATE}: expected a mapping at the top"
        )
    if not postgres:
        config.pop("storage", None)
    return config


def prepare_dagster_home(home: Path) -> InstanceInfo:
    """Write <home>/dagster_home/dagster.yaml for the configured storage and point env at it."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    postgres = postgres_configured()
    if postgres:
        values = postgres_env()
        for name, value in values.items():
            os.environ.setdefault(name, value)
        location = (
            f"PostgreSQL {values['DAGSTER_PG_USER']}@{values['DAGSTER_PG_HOST']}:"
            f"{values['DAGSTER_PG_PORT']}/{values['DAGSTER_PG_DB']}"
        )
    else:
        location = f"SQLite under {dagster_home}; set DAGSTER_PG_HOST for PostgreSQL"
    header = (
        "# Written by `flux` from the project's dagster.yaml "
        f"({'PostgreSQL' if postgres else 'embedded SQLite'} storage). Edit that file instead.\n"
    )
    text = yaml.safe_dump(instance_config(postgres=postgres), sort_keys=False)
    (dagster_home / "dagster.yaml").write_text(header + text, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    os.environ["FLUX_HOME"] = str(home)
    return InstanceInfo(dagster_home, "postgres" if postgres else "sqlite", location)
