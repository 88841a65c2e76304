"""Readiness: whether this Flux home can do its work now, each failure with its reason.

Liveness (``/healthz``) only says the exporter process answers; readiness (``/readyz``) asks
the stores Flux depends on: PostgreSQL (when configured), a writable home, a usable landing
zone, an audit trail that verifies against its anchors, and sensors that keep ticking. A
failing check names itself and says why, so a 503 is actionable without a shell.

The audit trail is verified through :class:`AuditCache`: a long trail is re-hashed only when
the trail or one of its anchors changed (size, mtime, inode), not on every probe or scrape.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flux_pipelines.audit.trail import AuditTrail, VerifyReport
from flux_pipelines.errors import FluxError
from flux_pipelines.instance.config import postgres_configured, postgres_env

if TYPE_CHECKING:
    import dagster as dg

# A running sensor whose latest tick is older than this is stale (the daemon is down, or
# the sensor is stuck). The daemon ticks sensors every 30 s by default.
DEFAULT_SENSOR_STALE_SECONDS = 600.0
PG_TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class Problem:
    """One failed readiness check: which check, and why, in words."""

    check: str  # postgres | home | landing | audit | sensor
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "reason": self.reason}


@dataclass(frozen=True)
class ReadinessSettings:
    """What readiness checks. ``check_home_writable`` is off where the exporter mounts the
    home read-only (compose, Kubernetes): there it cannot tell, and must not pretend to."""

    sensor_stale_seconds: float = DEFAULT_SENSOR_STALE_SECONDS
    check_home_writable: bool = True


@dataclass(frozen=True)
class AuditStatus:
    """A cached verify() verdict of the trail, and when it was computed."""

    ok: bool
    records: int
    problems: tuple[str, ...]
    verified_at: float
    seconds: float  # how long the verification took


class AuditCache:
    """verify() once per state of the trail and its anchors (size, mtime, inode of each):
    an unchanged trail is not re-hashed; any append, edit or anchor rewrite is."""

    def __init__(self, home: Path) -> None:
        self.trail = AuditTrail(home)
        self._key: tuple[object, ...] | None = None
        self._status: AuditStatus | None = None
        self._lock = threading.Lock()

    def _state(self) -> tuple[object, ...]:
        key: list[object] = []
        for path in (self.trail.path, self.trail.anchor_path, self.trail.state_anchor_path):
            try:
                st = os.stat(path)
                key.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except FileNotFoundError:
                key.append(None)
        return tuple(key)

    def status(self) -> AuditStatus:
        with self._lock:
            key = self._state()
            if self._status is None or key != self._key:
                started = time.perf_counter()
                try:
                    report: VerifyReport = self.trail.verify()
                    problems = tuple(str(p) for p in report.problems)
                    records = report.records
                except (OSError, FluxError) as exc:  # unreadable trail: a finding, not a crash
                    problems, records = (f"unreadable: {exc}",), 0
                self._status = AuditStatus(
                    ok=not problems,
                    records=records,
                    problems=problems,
                    verified_at=time.time(),
                    seconds=time.perf_counter() - started,
                )
                self._key = key
            return self._status


def readiness(
    home: Path,
    instance: dg.DagsterInstance | None,
    settings: ReadinessSettings | None = None,
    audit: AuditCache | None = None,
    *,
    now: float | None = None,
) -> list[Problem]:
    """Every failed readiness check of ``home`` (empty: ready)."""
    settings = settings or ReadinessSettings()
    problems: list[Problem] = []
    problems += check_postgres()
    if settings.check_home_writable:
        problems += check_home_writable(home)
    problems += check_landing(home)
    problems += check_audit(audit or AuditCache(home))
    if instance is not None:
        problems += check_sensors(instance, settings.sensor_stale_seconds, now=now)
    return problems


def check_postgres() -> list[Problem]:
    """PostgreSQL answers ``SELECT 1`` (only when DAGSTER_PG_HOST configures it)."""
    if not postgres_configured():
        return []
    import psycopg2

    try:
        env = postgres_env()
    except FluxError as exc:
        return [Problem("postgres", str(exc))]
    try:
        conn = psycopg2.connect(
            host=env["DAGSTER_PG_HOST"],
            port=int(env["DAGSTER_PG_PORT"] or 5432),
            user=env["DAGSTER_PG_USER"],
            password=env["DAGSTER_PG_PASSWORD"],
            dbname=env["DAGSTER_PG_DB"],
            connect_timeout=PG_TIMEOUT_SECONDS,
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
        finally:
            conn.close()
    except (psycopg2.Error, ValueError) as exc:
        where = f"{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']}/{env['DAGSTER_PG_DB']}"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [Problem("postgres", f"PostgreSQL {where} does not answer: {detail}")]
    return []


def check_home_writable(home: Path) -> list[Problem]:
    """A file can be created (and removed) in the home: loads, receipts and the trail write
    there. Tried for real: permission bits say nothing on a read-only mount or for root."""
    try:
        with tempfile.NamedTemporaryFile(dir=home, prefix=".flux-ready-", delete=True):
            pass
    except OSError as exc:
        return [Problem("home", f"the Flux home {home} is not writable: {exc.strerror or exc}")]
    return []


def check_landing(home: Path) -> list[Problem]:
    """``<home>/landing`` is a real, listable folder (a link could send agencies' files, and
    the sensors' reads, anywhere: the loaders refuse it, so it is not ready either)."""
    landing = home / "landing"
    try:
        st = os.lstat(landing)
    except FileNotFoundError:
        return [Problem("landing", f"the landing zone {landing} is missing")]
    except OSError as exc:
        return [Problem("landing", f"the landing zone {landing} cannot be read: {exc}")]
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(landing)
        return [Problem("landing", f"the landing zone {landing} is a link (to {target[:200]})")]
    if not stat.S_ISDIR(st.st_mode):
        return [Problem("landing", f"the landing zone {landing} is not a directory")]
    if not os.access(landing, os.R_OK | os.X_OK):
        return [Problem("landing", f"the landing zone {landing} cannot be listed")]
    return []


def check_audit(audit: AuditCache) -> list[Problem]:
    """The trail verifies end to end and agrees with both anchors."""
    status = audit.status()
    if status.ok:
        return []
    shown = "; ".join(status.problems[:3])
    more = f" (+{len(status.problems) - 3} more)" if len(status.problems) > 3 else ""
    return [
        Problem(
            "audit",
            f"the audit trail {audit.trail.path} does not verify: {shown}{more}. "
            "Run `flux audit verify`.",
        )
    ]


def check_sensors(
    instance: dg.DagsterInstance, stale_seconds: float, *, now: float | None = None
) -> list[Problem]:
    """Every sensor turned on has ticked within ``stale_seconds`` (or was turned on less
    than that ago): a sensor that stops ticking stops loading, silently."""
    now = time.time() if now is None else now
    problems: list[Problem] = []
    # Filtered by the enums' values: their classes are not public Dagster API. A sensor
    # running because its code says so (DECLARED_IN_CODE: the landing sensors) counts too.
    states = [
        state
        for state in instance.all_instigator_state()
        if state.instigator_type.value == "SENSOR"
        and state.status.value in ("RUNNING", "DECLARED_IN_CODE")
    ]
    for state in states:
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        last: float | None
        if ticks:
            last = ticks[0].timestamp
        else:
            data = state.instigator_data
            last = getattr(data, "start_timestamp", None) if data is not None else None
        if last is None or now - last > stale_seconds:
            ago = (
                "never ticked"
                if not ticks or last is None
                else f"last ticked {now - last:.0f}s ago"
            )
            problems.append(
                Problem(
                    "sensor",
                    f"sensor {state.instigator_name} is running but {ago} (threshold "
                    f"{stale_seconds:.0f}s): is the daemon running?",
                )
            )
    return problems
