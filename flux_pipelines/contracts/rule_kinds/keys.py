"""``<column>.unique`` (and composite keys, exact duplicate rows): a key repeats nowhere in
one delivery. The loader sees every file and decides it (ingest/delivery.py), handing the
validator a flag per key; the pandera schema checks it per delivery day on curated rows;
the generator plants it by repeating a row's key."""

import polars as pl

from flux_pipelines.contracts.model import ColumnSpec
from flux_pipelines.contracts.rule_kinds.base import RuleKindSpec

UNIQUE = RuleKindSpec(
    kind="unique",
    category="accuracy",
    # several primaryKey columns are one composite rule (loader.py), not one per column
    declared=lambda column: column.unique or column.primary_key,
    words=lambda column: (
        f"{column.name} must be unique within a delivery",
        "a value not repeated",
    ),
    violation=lambda cell: pl.lit(False),  # replaced by the loader's flag (validator.py)
)


def _no_words(column: ColumnSpec) -> tuple[str, str]:
    raise AssertionError(f"{column.name}: expression rules come from quality entries")


EXPRESSION = RuleKindSpec(
    kind="expression",
    category="accuracy",
    declared=lambda column: False,  # declared as a quality rule, compiled by the loader
    words=_no_words,
    violation=lambda cell: pl.lit(False),  # the rule's own SQL expression (validator.py)
)
