"""The Dagster wiring, one package per domain; ``flux_pipelines/definitions.py`` merges them.

- ``ingest/``: every agency's deliveries validated and loaded (one step per agency), the
  landing sensors that start those runs, the per-agency ingest jobs.
- ``spending/``: risk scores and models, the reconciliations, the risk jobs and the
  sensor that scores each newly loaded day.
- ``published/``: every agency's read-only catalog, the cross-agency outputs behind the
  certification gate, delivery status, the daily refresh job and schedule.
- ``collections/``: the use-case exports (``contracts/use_cases.yaml``).
- ``operations/``: the alert sensors and the scheduled purge.
- ``partitions.py`` (an agency's days) and ``results.py`` (what an asset body returns):
  shared by every domain, so no domain's wiring imports another's for them.

Each domain's ``definitions.py`` has one ``definitions(registry)``; what every domain shares
(resources, executor, loggers) is applied once by the root. Nothing here imports DuckDB or
scikit-learn at load: the step bodies import their code when a step runs.
"""
