"""Seeded generator of realistic deliveries with planted defects, driven only by contracts.

Why: the demo, the tests and the benchmark need files that look like an agency's deliveries
(plausible values, non-ASCII names, quoted newlines, byte-order marks) and that carry known
defects, so what the pipeline quarantines can be checked against what was planted. Nothing
here knows a dataset: values come from each column's type and constraints, and the
contract's own ``RowValidator`` is the oracle. Rows that break a rule by accident are
resampled; a defective row is kept only when the validator finds exactly the rule it was
made to break. Valid rows are produced column-wise (numpy's seeded PCG64 plus polars), so
a million rows take seconds; only the few defective rows are handled rule by rule.

A demo delivery has a few hundred rows, where a polars or validator call's fixed cost, not
the rows, is what takes the time. So column values are polars expressions over the seeded
draws, computed in one ``select`` per batch of columns; repair rounds try several
candidates per failing row; and the generation steps are coroutines asking the oracle
(``oracle.py``), so that ``generate_many`` judges the rows of all deliveries of a contract
in one validator call per round.

This module is the public face; each step has its own module, in the order a delivery is made:
  draws.py         seeded draws, columns as polars expressions
  patterns.py      strings matching a contract pattern (a tiny regex parser and sampler)
  keys.py          unique keys, distinct across streamed chunks
  columns.py       what each column needs, fixed once per delivery
  values.py        valid values of one column from its spec
  plan.py          a contract compiled for generation (row-rule shapes, plantable rules)
  repairs.py       candidate rows and the generic repairs of row rules
  valid.py         rows that break no rule (validate, repair what failed)
  defects.py       which rows carry which defect, and the planted table
  planting.py      planting defects (bad values from the rule kinds), judged by the oracle
  oracle.py        the validator as a judge of many deliveries at once
  rows.py          one delivery, or many in lockstep
  files.py         writing CSV/JSONL/JSON/Parquet, streaming a large CSV
  references.py    foreign keys pointing at rows the agency really sent
  realism.py       dataset plug-ins (spending.py registers the spending dataset's)
  scenario.py      the demo's planted anomalies (the one place naming agencies, datasets)
  landing_plan.py  the demo's calendar: deliveries, sizes, formats, defect rates
  landing.py       the landing folder: all of the above, per planned delivery
  runs.py          in-process Dagster runs over the demo's days (``flux demo``, the bench)
"""

from __future__ import annotations

from flux_pipelines.demo.delivery import PLANTED_SCHEMA, GeneratedDelivery, delivered_headers
from flux_pipelines.demo.errors import GenerationError
from flux_pipelines.demo.files import Format, write_delivery, write_large_csv
from flux_pipelines.demo.landing import generate_landing
from flux_pipelines.demo.landing_plan import DEMO_START, VOLUME_WOBBLE
from flux_pipelines.demo.patterns import UnsupportedPatternError, parse_pattern, sample_pattern
from flux_pipelines.demo.references import link_references
from flux_pipelines.demo.rows import RowsRequest, generate_many, generate_rows
from flux_pipelines.demo.scenario import DEMO_ANOMALIES, PlantedAnomaly, planted_anomalies

__all__ = [
    "DEMO_ANOMALIES",
    "DEMO_START",
    "PLANTED_SCHEMA",
    "VOLUME_WOBBLE",
    "Format",
    "GeneratedDelivery",
    "GenerationError",
    "PlantedAnomaly",
    "RowsRequest",
    "UnsupportedPatternError",
    "delivered_headers",
    "generate_landing",
    "generate_many",
    "generate_rows",
    "link_references",
    "parse_pattern",
    "planted_anomalies",
    "sample_pattern",
    "write_delivery",
    "write_large_csv",
]
