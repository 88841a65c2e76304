"""What an asset definition hands to its step: the assets it writes, and the retry policy.

Imported whenever the definitions load (every run worker, step process and code server), so
it stays light: no DuckDB, polars or step code. The steps themselves are imported by the
asset bodies when a step runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg

from flux_pipelines.errors import TransientError

TRANSIENT_RETRIES = 3


def retry_delay(attempt: int, base: float = 2.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter (so parallel retries do not stampede)."""
    return random.uniform(0, min(cap, base * 2**attempt))


@contextmanager
def transient_retries(retry_number: int) -> Iterator[None]:
    """A TransientError (a held file lock) inside becomes a retry with backoff; nothing else."""
    try:
        yield
    except TransientError as exc:
        raise dg.RetryRequested(
            max_retries=TRANSIENT_RETRIES, seconds_to_wait=retry_delay(retry_number)
        ) from exc


@dataclass(frozen=True)
class IngestKeys:
    """The three assets one ingest step writes."""

    raw: dg.AssetKey
    curated: dg.AssetKey
    quarantine: dg.AssetKey


@dataclass(frozen=True)
class DatasetStep:
    """One dataset of the agency step: its name and the three assets it writes."""

    dataset: str
    keys: IngestKeys
