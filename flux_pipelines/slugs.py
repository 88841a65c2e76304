"""Strict identifiers: agency and dataset ids reach file paths, partition keys and SQL."""

from __future__ import annotations

import re

from flux_pipelines.errors import ConfigurationError

_SLUG = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_SLUG_LENGTH = 48


def check_slug(value: object, what: str) -> str:
    """Return ``value`` if it is a strict slug, else raise a ConfigurationError naming it."""
    if not isinstance(value, str) or len(value) > MAX_SLUG_LENGTH or not _SLUG.match(value):
        raise ConfigurationError(
            f"{what} {value!r} is not a valid id: use lowercase letters and digits separated "
            f"by single '-' or '_', starting with a letter, at most {MAX_SLUG_LENGTH} characters"
        )
    return value


def check_column(value: object, what: str) -> str:
    """Column names reach SQL unquoted in places: keep them to snake_case identifiers."""
    if not isinstance(value, str) or not _COLUMN.match(value) or len(value) > 63:
        raise ConfigurationError(
            f"{what} {value!r} is not a valid column name: use lowercase snake_case"
        )
    return value


def dagster_name(slug: str) -> str:
    """Dagster names (asset key parts, groups) allow no '-': map it to '_'."""
    return slug.replace("-", "_")


def normalise_header(header: str) -> str:
    """Map a delivered header to the contract's column naming.

    Strips byte-order marks and whitespace, lowercases, and turns runs of other characters
    into one '_', so 'Mass (g)' and ' mass_g ' both match a column named 'mass_g'.
    """
    cleaned = header.replace("\ufeff", "").strip().lower()
    cleaned = re.sub(r"[^a-z0-9]+", "_", cleaned).strip("_")
    return cleaned
