"""Failed-token attempts in the audit trail, aggregated so a flood cannot grow it unbounded.

A token that fails verification (expired, forged, for another audience or issuer, unknown
key, malformed) names nobody Flux can trust, yet the attempt is what an operator must see.
Each is an ``access`` record (``audit.record_unverified_access``) with action
``authenticate``, outcome ``denied``, the reason class, the connecting client, the endpoint
(its route, not the raw path a client chose) and the subject and issuer the token claimed,
under ``unverified_*`` keys.

Aggregation, per (reason, client): the first attempt is recorded at once (``attempts: 1``);
further attempts within ``window_seconds`` of it are only counted, then recorded as one
record (``attempts: n``, ``aggregated: true``, the first and last time, up to
``MAX_SAMPLES`` distinct endpoints and claimed subjects and issuers) when the window ends:
on the next attempt after it, on the periodic ``flush`` the intake runs, or when the intake
stops. So the trail grows by at most two records per reason and client per window, however
many attempts: attempts beyond ``max_keys`` (reason, client) pairs in flight are counted
under client ``*`` (one pair per reason), so many clients cannot grow it unbounded either.
The sum of
``attempts`` over the records is every attempt seen. Counts held in memory when the process
is killed (SIGKILL) are lost; the first attempt of each pair is already recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flux_pipelines.access.audit import record_unverified_access
from flux_pipelines.audit.trail import JSONValue

log = logging.getLogger("flux.access")
ACTION = "authenticate"
WINDOW_SECONDS = 60.0
MAX_KEYS = 1000  # (reason, client) pairs aggregated apart per window; the rest under "*"
MAX_SAMPLES = 5  # distinct endpoints / claimed subjects / claimed issuers kept per record
OTHER_CLIENTS = "*"


@dataclass(frozen=True)
class TokenFailure:
    """One rejected token, as the request showed it. ``claimed_*`` and ``forwarded_for`` are
    what the client sent, never verified; ``client`` is the connection's peer address."""

    reason: str
    client: str
    endpoint: str
    claimed_subject: str | None = None
    claimed_issuer: str | None = None
    forwarded_for: str | None = None
    token_verified: bool = False  # a valid token that grants no Flux role

    def first_record(self, at: float) -> dict[str, JSONValue]:
        return {
            "reason": self.reason,
            "client": self.client,
            "endpoint": self.endpoint,
            "unverified_subject": self.claimed_subject,
            "unverified_issuer": self.claimed_issuer,
            "unverified_forwarded_for": self.forwarded_for,
            "token_verified": self.token_verified,
            "attempts": 1,
            "aggregated": False,
            "first_at": _iso(at),
        }


@dataclass
class _Window:
    """Attempts of one (reason, client) after its first, within one window."""

    started: float
    repeats: int = 0
    last: float = 0.0
    endpoints: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    issuers: list[str] = field(default_factory=list)

    def add(self, failure: TokenFailure, at: float) -> None:
        self.repeats += 1
        self.last = at
        _sample(self.endpoints, failure.endpoint)
        _sample(self.subjects, failure.claimed_subject)
        _sample(self.issuers, failure.claimed_issuer)

    def summary(self, reason: str, client: str) -> dict[str, JSONValue]:
        return {
            "reason": reason,
            "client": client,
            "attempts": self.repeats,
            "aggregated": True,
            "first_at": _iso(self.started),
            "last_at": _iso(self.last),
            "endpoints": list(self.endpoints),
            "unverified_subjects": list(self.subjects),
            "unverified_issuers": list(self.issuers),
        }


class FailedTokenLedger:
    """Records failed-token attempts in ``home``'s audit trail, aggregated per window.

    Thread-safe (the intake verifies tokens on worker threads). ``clock`` gives seconds since
    the epoch; tests pass their own to cross a window without waiting."""

    def __init__(
        self,
        home: Path,
        *,
        window_seconds: float = WINDOW_SECONDS,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        self.clock = clock
        self._open: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()

    def note(self, failure: TokenFailure) -> None:
        """Count one attempt; the first of its (reason, client) in a window is recorded now."""
        now = self.clock()
        with self._lock:
            self._flush_ended(now)
            key = (failure.reason, failure.client)
            if key not in self._open and len(self._open) >= self.max_keys:
                key = (failure.reason, OTHER_CLIENTS)
            window = self._open.get(key)
            if window is not None:
                window.add(failure, now)
                return
            self._open[key] = _Window(started=now, last=now)
            first = failure.first_record(now)
            first["client"] = key[1]
            self._record(first)
        log.warning(
            "rejected token (%s) from %s on %s; further ones from it in the next %.0f s are "
            "counted into one audit record",
            failure.reason, failure.client, failure.endpoint, self.window_seconds,
        )  # fmt: skip

    def flush(self, *, force: bool = False) -> int:
        """Record the windows that ended (every window when ``force``: the intake stops);
        returns how many records were written."""
        with self._lock:
            return self._flush_ended(None if force else self.clock())

    def pending(self) -> int:
        """Attempts counted but not yet in the trail."""
        with self._lock:
            return sum(w.repeats for w in self._open.values())

    def _flush_ended(self, now: float | None) -> int:
        ended = [
            key
            for key, window in self._open.items()
            if now is None or now - window.started >= self.window_seconds
        ]
        written = 0
        for key in ended:
            window = self._open.pop(key)
            if window.repeats:
                self._record(window.summary(*key))
                written += 1
        return written

    def _record(self, detail: dict[str, JSONValue]) -> None:
        """Append, never failing the request: it is refused anyway, and the trail's own
        problems are reported by ``flux audit verify`` and the readiness check."""
        try:
            record_unverified_access(self.home, ACTION, "denied", detail=detail)
        except Exception:  # the refusal stands; the lost record is logged loudly
            log.exception("could not record a rejected token in the audit trail: %s", detail)


def _sample(kept: list[str], value: str | None) -> None:
    if value is not None and value not in kept and len(kept) < MAX_SAMPLES:
        kept.append(value)


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
