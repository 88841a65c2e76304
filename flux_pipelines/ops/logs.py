"""Structured logs: one JSON object per line when ``FLUX_LOG_FORMAT=json``.

Loki or ELK filter on fields, not on message text ("agency nasa, dataset meteorites, rule
id.unique"), so every line carries, where they apply: ``run_id``, ``job``, ``step``,
``agency``, ``dataset``, ``partition``, ``file``, ``rule`` (plus ``rules``: every rule's
count for the day, and ``event``: Dagster's event type).

- Run logs go through Dagster's own logger machinery. A run whose config names the code
  location's ``console`` logger (landing sensors' runs, ``flux load``) gets
  ``flux_console_logger``: Dagster's colored console, or in JSON mode the same logger with
  :class:`FluxJsonFormatter`. Every other run (schedules, the UI's launchpad and Materialize
  button, backfills, retries) gets Dagster's default system console, which no job setting
  or instance setting replaces (dagster PR #24338 is still open upstream). Dagster builds
  that console with ``logging.getLoggerClass()``, so in JSON mode Flux's code sets that
  class to one whose console handlers format with :class:`FluxJsonFormatter`
  (:func:`use_json_console_loggers`): every run process loads the code location before it
  builds its loggers, so every run logs JSON lines, whoever started it.
  Run id, job and step come from Dagster's record metadata; agency, dataset, file and rule
  from the ``extra=`` of Flux's ``context.log`` calls (``day_fields``), else from the
  event's ingest asset (agency id and dataset), the run's tags (``agency``, ``dataset``,
  ``dagster/partition``) or the event's partition.
- Flux's own Python loggers (``flux``, ``flux_pipelines``) are Dagster managed loggers
  (``python_logs`` in dagster.yaml), so inside a run they reach the same console logger. Out
  of a run (sensors' helpers, the intake service) JSON mode gives the root logger the same
  formatter plus :class:`ContextFilter`, which adds fields bound with :func:`log_context`;
  Python warnings are routed into it too, so no plain-text line is left on stderr.

The default stays human-readable (``flux demo``, ``flux dev`` in a terminal).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from flux_pipelines.errors import DayLoadFailed
    from flux_pipelines.ingest.delivery import PartitionResult

LOG_FORMAT_ENV = "FLUX_LOG_FORMAT"
CONTEXT_FIELDS = ("agency", "dataset", "partition", "file", "rule")
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_DAGSTER = frozenset({"dagster_meta", "dagster_event", "dagster_event_batch_metadata"})
_context: ContextVar[Mapping[str, object]] = ContextVar("flux_log_context", default={})  # noqa: B039 - never mutated


def json_logs() -> bool:
    """Whether this process logs JSON lines (``FLUX_LOG_FORMAT=json``)."""
    return os.environ.get(LOG_FORMAT_ENV, "").strip().lower() == "json"


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Bind context fields (agency, dataset, partition, file, rule) to every record logged
    in the block by this thread or task, through :class:`ContextFilter`."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Adds the fields bound with :func:`log_context` a record does not carry itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class FluxJsonFormatter(logging.Formatter):
    """One JSON object per record, the filter fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        meta: Mapping[str, Any] | None = getattr(record, "dagster_meta", None)
        doc: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": str(meta["orig_message"]) if meta else record.getMessage(),
        }
        if meta:
            tags: Mapping[str, str] = meta.get("job_tags") or {}
            event = meta.get("dagster_event")
            index = _ingest_index()
            asset = _event_asset(event)
            agency, dataset = index.assets.get(asset, (None, None)) if asset else (None, None)
            tagged = tags.get("agency")
            doc |= {
                "run_id": meta.get("run_id"),
                "job": meta.get("job_name"),
                "step": meta.get("step_key"),
                "event": getattr(event, "event_type_value", None),
                "agency": agency or index.agency_ids.get(tagged or "", tagged),
                "dataset": dataset or tags.get("dataset"),
                "partition": _event_partition(event) or tags.get("dagster/partition"),
            }
        for key, value in record.__dict__.items():  # the log call's extra= fields win
            if key not in _STANDARD and key not in _DAGSTER and value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in doc.items() if v is not None}, default=str)


def _event_partition(event: object) -> str | None:
    """The event's partition (``DagsterEvent.partition``: None for kinds without one)."""
    return getattr(event, "partition", None)


def _event_asset(event: object) -> dg.AssetKey | None:
    """The asset an event is about: materializations and the like, or a check's asset."""
    key = getattr(event, "asset_key", None)
    return key or getattr(getattr(event, "event_specific_data", None), "asset_key", None)


@dataclass(frozen=True)
class IngestIndex:
    """Ingest asset key -> (agency id, dataset), and agency key (the ``agency`` run tag,
    ``-`` read as ``_``) -> agency id: so a line says ``national-archives``, as Flux's own
    log calls do, whichever way Dagster named the agency."""

    assets: Mapping[dg.AssetKey, tuple[str, str]]
    agency_ids: Mapping[str, str]


@functools.cache
def _ingest_index() -> IngestIndex:
    """Built once per process from the registry (already loaded by the code location); an
    unreadable registry leaves the fields to the tags (a formatter must never raise)."""
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.errors import ConfigurationError
    from flux_pipelines.names import ingest_keys

    try:
        agencies = load_registry().agencies
    except ConfigurationError:
        return IngestIndex({}, {})
    assets = {key: (a.id, d) for a in agencies for d in a.datasets for key in ingest_keys(a, d)}
    return IngestIndex(assets, {a.key: a.id for a in agencies})


def json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FluxJsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def _is_console(handler: logging.Handler) -> bool:
    """A handler writing to this process's stdout or stderr (coloredlogs' handler looks its
    stream up on every write, so it is compared when it is attached)."""
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
        sys.stdout,
        sys.stderr,
        sys.__stdout__,
        sys.__stderr__,
    )


class JsonConsoleMixin(logging.Logger):
    """A logger whose console handlers write Flux's JSON lines (in JSON mode)."""

    def addHandler(self, hdlr: logging.Handler) -> None:
        plain = not isinstance(hdlr.formatter, FluxJsonFormatter)
        if plain and json_logs() and _is_console(hdlr):
            hdlr.setFormatter(FluxJsonFormatter())
            hdlr.addFilter(ContextFilter())
        super().addHandler(hdlr)


def use_json_console_loggers() -> None:
    """Loggers made from now on in this process (Dagster's default run console among them,
    which it builds with ``logging.getLoggerClass()``) write JSON to the console. A logger
    class another library set stays, as the base. Idempotent."""
    current = logging.getLoggerClass()
    if issubclass(current, JsonConsoleMixin):
        return
    if current is logging.Logger:
        logging.setLoggerClass(JsonConsoleMixin)
    else:
        logging.setLoggerClass(type(f"Json{current.__name__}", (JsonConsoleMixin, current), {}))


def configure_python_logging() -> None:
    """In JSON mode: the root logger writes JSON lines, Python warnings go through it, and
    new loggers' console handlers (every run's console) write JSON. Idempotent; does
    nothing in the default (human) mode."""
    if not json_logs():
        return
    use_json_console_loggers()
    root = logging.getLogger()
    if any(isinstance(h.formatter, FluxJsonFormatter) for h in root.handlers):
        return
    for handler in list(root.handlers):  # a plain-text handler would break the JSON stream
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.stderr,
            sys.stdout,
        ):
            root.removeHandler(handler)
    root.addHandler(json_handler())
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    logging.captureWarnings(True)


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
    },
    description="Dagster's console logger; JSON lines with Flux's fields when "
    "FLUX_LOG_FORMAT=json.",
)
def flux_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """The run's console logger: Dagster's colored one, or JSON lines in JSON mode."""
    config = init_context.logger_config
    level = logging.getLevelName(str(config["log_level"]).upper())
    if not json_logs():
        return dg.colored_console_logger.logger_fn(init_context)
    configure_python_logging()
    logger = logging.getLoggerClass()(config["name"], level=level)
    logger.addHandler(json_handler())
    return logger


# The run config that starts the code location's console logger (Dagster starts a job's
# loggers only when the run config names them): what the landing sensors' run requests carry,
# so the runs that load deliveries log JSON lines in JSON mode. DEBUG keeps the default
# verbosity of Dagster's own console.
CONSOLE_RUN_CONFIG: dict[str, object] = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}


def flux_loggers() -> dict[str, dg.LoggerDefinition]:
    """The code location's default loggers (``console``: the key ``flux load`` configures)."""
    configure_python_logging()
    return {"console": flux_console_logger}


# -- fields for Flux's log calls -----------------------------------------------------------


def day_fields(result: PartitionResult) -> dict[str, object]:
    """A loaded day's fields: ``file`` (the one file, or the files comma-joined), ``rule``
    (the rule that quarantined most rows), ``rules`` (every rule's count)."""
    top = sorted(result.rule_counts.items(), key=lambda rule: (-rule[1], rule[0]))
    rejected = [f.rule_id for f in result.files if f.rule_id]
    return {
        "agency": result.agency,
        "dataset": result.dataset,
        "partition": result.day.isoformat(),
        "file": ", ".join(f.file for f in result.files) or None,
        "rule": top[0][0] if top else (rejected[0] if rejected else None),
        "rules": dict(top) or None,
    }


def failure_fields(failed: DayLoadFailed) -> dict[str, object]:
    """A failed day's fields (the cause's file and rule when it names them)."""
    return {
        "agency": failed.agency,
        "dataset": failed.dataset,
        "partition": failed.day,
        "file": getattr(failed.cause, "file", None),
        "rule": getattr(failed.cause, "rule_id", None),
    }
