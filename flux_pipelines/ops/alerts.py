"""Alert notices, their channels (e-mail, Slack / Teams webhook) and the ledger that keeps
them from storming.

A *notice* is one cause on one agency, dataset and day (``run_failure``, ``late``,
``anomaly_hold``, ``rejected``). The sensors in ``alert_sensors.py`` find causes in the stores
Flux already keeps (Dagster's runs and event log, the audit trail) and hand them to the
:class:`Ledger`, which sends each notice once per channel and, when the cause clears, one
resolve notice to the channels that got the first one.

The ledger lives in Dagster's own durable key-value store (the run storage's cursor table,
SQLite or PostgreSQL), not in a file beside it: it survives restarts of the daemon and code
server, and a notice already sent is never sent again. A channel that fails is logged with
the reason and retried on the next tick; it never stops the other channel.

Configuration is one file, ``contracts/alerts.yaml``; secrets (the webhook URLs, the SMTP
password) come from environment variables the file names, never from the file. E-mail goes
to each audience's addresses; webhooks go to one URL for every audience, or to one per
audience (operators; every agency's owner and submitters; one agency's), each its own
channel in the ledger, so one webhook that is down delays only its own notices.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flux_pipelines.config_files import load_model
from flux_pipelines.errors import TransientError

if TYPE_CHECKING:
    import dagster as dg

    from flux_pipelines.contracts.registry import Agency, Registry

log = logging.getLogger(__name__)

ALERTS_FILE = "alerts.yaml"
WEBHOOK = "webhook"  # the single-URL webhook's channel name (kept in the ledger's `sent`)
LEDGER_KEY = "flux/alerts/ledger"  # Dagster's key-value store (run storage)


class Cause(StrEnum):
    RUN_FAILURE = "run_failure"
    LATE = "late"
    ANOMALY_HOLD = "anomaly_hold"
    REJECTED = "rejected"


class Audience(StrEnum):
    OPERATORS = "operators"
    OWNER = "owner"  # the agency's owner (agencies.yaml `owner`)
    AGENCY = "agency"  # the submitting agency's contact


AUDIENCES: dict[Cause, tuple[Audience, ...]] = {
    Cause.RUN_FAILURE: (Audience.OPERATORS,),
    Cause.LATE: (Audience.OPERATORS, Audience.OWNER),
    Cause.ANOMALY_HOLD: (Audience.OWNER,),
    Cause.REJECTED: (Audience.AGENCY,),
}

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ChannelError(TransientError):
    """A channel could not deliver a notice (server down, refused, timed out); the ledger
    keeps the notice due on that channel and tries again on the next tick."""


# -- configuration ---------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            inline = sorted({"password", "url", "webhook_url", "token"} & set(data))
            if inline:
                raise ValueError(
                    f"{', '.join(inline)} must not be written in the file: name the environment "
                    f"variable that holds it instead ({inline[0]}_env: SOME_VAR)"
                )
        return data


class EmailConfig(_Strict):
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username_env: str | None = None
    password_env: str | None = None
    sender: str = Field(alias="from", pattern=EMAIL.pattern)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


WebhookFormat = Literal["slack", "teams"]


class WebhookTarget(_Strict):
    """One webhook: the environment variable holding its URL (a secret), and its format
    (default: the webhook block's)."""

    url_env: str = Field(min_length=1)
    format: WebhookFormat | None = None


class WebhookConfig(_Strict):
    """Where webhook notices go, per audience. ``url_env`` alone is the single-URL form
    (every audience on one channel); ``operators``, ``agencies`` (every agency's owner and
    submitters) and ``by_agency`` (one agency's) give an audience its own channel, and
    ``url_env`` then serves the audiences left without one."""

    url_env: str | None = Field(default=None, min_length=1)
    format: WebhookFormat = "slack"
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    operators: WebhookTarget | None = None
    agencies: WebhookTarget | None = None
    by_agency: dict[str, WebhookTarget] = {}

    @model_validator(mode="after")
    def _has_a_target(self) -> WebhookConfig:
        if self.url_env is None and not (self.operators or self.agencies or self.by_agency):
            raise ValueError(
                "no webhook URL: name url_env (every audience), or operators / agencies / "
                "by_agency with a url_env each"
            )
        return self

    def targets(self) -> dict[str, WebhookTarget]:
        """Channel name -> target; ``webhook`` is the single-URL (default) target."""
        found = {WEBHOOK: WebhookTarget(url_env=self.url_env)} if self.url_env else {}
        if self.operators:
            found[f"{WEBHOOK}:operators"] = self.operators
        if self.agencies:
            found[f"{WEBHOOK}:agencies"] = self.agencies
        found |= {f"{WEBHOOK}:agency:{a}": t for a, t in sorted(self.by_agency.items())}
        return found

    def route(self, audience: str, agency: str) -> str | None:
        """The channel name one audience of a notice about ``agency`` hears on (None: no
        webhook for it)."""
        default = WEBHOOK if self.url_env else None
        if audience == Audience.OPERATORS:
            return f"{WEBHOOK}:operators" if self.operators else default
        if agency in self.by_agency:
            return f"{WEBHOOK}:agency:{agency}"
        return f"{WEBHOOK}:agencies" if self.agencies else default


class ChannelsConfig(_Strict):
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None


class AudiencesConfig(_Strict):
    operators: tuple[str, ...] = ()
    # Owners' addresses when an agency's `owner` in agencies.yaml is not an e-mail address.
    owners: tuple[str, ...] = ()
    # agency id -> the addresses of the people who submit its files.
    agencies: dict[str, tuple[str, ...]] = {}


class ThresholdsConfig(_Strict):
    late_grace_minutes: int = Field(default=0, ge=0, le=24 * 60)
    late_lookback_days: int = Field(default=3, ge=1, le=60)
    # A cause that never clears is dropped from the ledger (no resolve notice) after this.
    forget_after_days: int = Field(default=14, ge=1, le=366)
    # The sensors' minimum_interval_seconds (the daemon evaluates each at most this often).
    run_failure_interval_seconds: int = Field(default=30, ge=10)
    late_interval_seconds: int = Field(default=300, ge=30)
    quality_interval_seconds: int = Field(default=60, ge=10)


class AlertsConfig(_Strict):
    channels: ChannelsConfig = ChannelsConfig()
    audiences: AudiencesConfig = AudiencesConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    ui_url: str | None = None  # Dagster UI, for links in notices

    @property
    def has_channels(self) -> bool:
        return self.channels.email is not None or self.channels.webhook is not None


def alerts_path(registry: Registry) -> Path:
    return registry.root / ALERTS_FILE


def load_alerts_config(path: Path) -> AlertsConfig:
    """The alerts file; an absent file configures no channel (alerts stay quiet)."""
    return load_model(AlertsConfig, path, "alerts file", missing={})


# -- notices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    cause: str
    agency: str
    dataset: str
    day: str  # a partition key (YYYY-MM-DD), or a range "first..last"
    severity: str  # ERROR | WARN | INFO
    title: str
    text: str
    links: dict[str, str] = field(default_factory=dict)
    state: Literal["firing", "resolved"] = "firing"
    audience: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The de-duplication key: one notice per cause, agency, dataset and day."""
        return f"{self.cause}|{self.agency}|{self.dataset}|{self.day}"

    def resolved(self, text: str) -> Notice:
        return replace(
            self, state="resolved", severity="INFO", title=f"Resolved: {self.title}", text=text
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Notice:
        return cls(
            **{**doc, "audience": tuple(doc.get("audience", ())), "links": dict(doc["links"])}
        )

    def subject(self) -> str:
        return f"[Flux {self.state.upper()}] {self.title}"

    def body(self) -> str:
        lines = [
            self.text,
            "",
            f"cause: {self.cause}",
            f"agency: {self.agency}",
            f"dataset: {self.dataset}",
            f"day: {self.day}",
            f"severity: {self.severity}",
            f"state: {self.state}",
            f"audience: {', '.join(self.audience)}",
        ]
        lines += [f"{label}: {url}" for label, url in self.links.items()]
        return "\n".join(lines)


def notice(
    cause: Cause,
    agency: str,
    dataset: str,
    day: str,
    title: str,
    text: str,
    *,
    severity: str = "ERROR",
    links: Mapping[str, str] | None = None,
) -> Notice:
    return Notice(
        cause=cause.value,
        agency=agency,
        dataset=dataset,
        day=day,
        severity=severity,
        title=title,
        text=text,
        links=dict(links or {}),
        audience=tuple(a.value for a in AUDIENCES[cause]),
    )


# -- routing and channels --------------------------------------------------------------------


class Router:
    """Who receives a notice by e-mail: operators from the file, the owner from agencies.yaml
    (when it is an address; else the file's `owners`), the submitting agency's contacts from
    the file (else its owner's address)."""

    def __init__(self, config: AlertsConfig, registry: Registry) -> None:
        self.config = config
        self.agencies: dict[str, Agency] = {a.id: a for a in registry.agencies}

    def _owner(self, agency_id: str) -> tuple[str, ...]:
        agency = self.agencies.get(agency_id)
        if agency is not None and EMAIL.match(agency.owner):
            return (agency.owner,)
        return self.config.audiences.owners

    def addresses(self, n: Notice) -> list[str]:
        found: list[str] = []
        for audience in n.audience:
            if audience == Audience.OPERATORS:
                found += self.config.audiences.operators
            elif audience == Audience.OWNER:
                found += self._owner(n.agency)
            elif audience == Audience.AGENCY:
                found += self.config.audiences.agencies.get(n.agency) or self._owner(n.agency)
        return list(dict.fromkeys(found))


class Channel(Protocol):
    name: str

    def wants(self, n: Notice) -> bool:
        """Whether this channel carries the notice (a webhook serves some audiences)."""
        ...

    def send(self, n: Notice, recipients: Sequence[str]) -> None: ...


def _secret(var: str | None, what: str) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ChannelError(f"{what}: environment variable {var} (named in alerts.yaml) is not set")
    return value


class EmailChannel:
    """Plain-text e-mail through an SMTP relay (STARTTLS and login when configured)."""

    name = "email"

    def __init__(self, config: EmailConfig) -> None:
        self.config = config

    def wants(self, n: Notice) -> bool:
        return True  # the Router picks each audience's addresses

    def send(self, n: Notice, recipients: Sequence[str]) -> None:
        import smtplib
        from email.message import EmailMessage

        if not recipients:
            log.info("alert %s: no e-mail recipient for %s; nothing to send", n.key, n.audience)
            return
        c = self.config
        message = EmailMessage()
        message["Subject"] = n.subject()
        message["From"] = c.sender
        message["To"] = ", ".join(recipients)
        message["X-Flux-Alert"] = f"{n.key} {n.state}"
        message.set_content(n.body())
        user = _secret(c.username_env, "SMTP user")
        password = _secret(c.password_env, "SMTP password")
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout_seconds) as smtp:
                if c.starttls:
                    smtp.starttls()
                if user and password:
                    smtp.login(user, password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(
                f"e-mail via {c.host}:{c.port}: {exc or type(exc).__name__}"
            ) from exc


class WebhookChannel:
    """A JSON POST to one webhook target: Slack's ``{"text", "blocks"}`` or a Teams
    MessageCard. It carries the notices whose audiences ``WebhookConfig.route`` sends to it."""

    def __init__(self, config: WebhookConfig, name: str = WEBHOOK) -> None:
        self.config = config
        self.name = name
        self.target = config.targets()[name]
        self.format: WebhookFormat = self.target.format or config.format

    def wants(self, n: Notice) -> bool:
        return any(self.config.route(a, n.agency) == self.name for a in n.audience)

    def payload(self, n: Notice) -> dict[str, Any]:
        where = f"{n.agency}/{n.dataset} {n.day}"
        if self.format == "teams":
            return {
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "themeColor": "2EB886" if n.state == "resolved" else "D70000",
                "summary": n.subject(),
                "title": n.subject(),
                "text": n.text,
                "sections": [
                    {
                        "facts": [
                            {"name": name, "value": value}
                            for name, value in (
                                ("cause", n.cause),
                                ("where", where),
                                ("severity", n.severity),
                                ("state", n.state),
                                ("audience", ", ".join(n.audience)),
                            )
                        ]
                    }
                ],
                "potentialAction": [
                    {"@type": "OpenUri", "name": label, "targets": [{"os": "default", "uri": url}]}
                    for label, url in n.links.items()
                ],
            }
        context = f"{n.cause} · {where} · {n.severity} · {n.state} · to {', '.join(n.audience)}"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": n.subject()[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": n.text[:2900]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ]
        if n.links:
            links = " · ".join(f"<{url}|{label}>" for label, url in n.links.items())
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": links}})
        return {"text": n.subject(), "blocks": blocks}

    def send(self, n: Notice, recipients: Sequence[str]) -> None:
        import urllib.error
        import urllib.request

        url = _secret(self.target.url_env, f"webhook URL ({self.name})")
        body = json.dumps(self.payload(n)).encode("utf-8")
        request = urllib.request.Request(
            str(url), data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as answer:
                answer.read()
        except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors
            raise ChannelError(f"{self.name} ({self.format}): {exc}") from exc


def build_channels(config: AlertsConfig) -> list[Channel]:
    """E-mail, then one webhook channel per configured target (each fails and retries alone)."""
    channels: list[Channel] = []
    if config.channels.email is not None:
        channels.append(EmailChannel(config.channels.email))
    webhook = config.channels.webhook
    if webhook is not None:
        channels += [WebhookChannel(webhook, name) for name in webhook.targets()]
    return channels


def unknown_agencies(config: AlertsConfig, known: set[str]) -> list[str]:
    """Agency ids the file routes (webhook ``by_agency``, ``audiences.agencies``) that the
    registry does not list: a typo there would silently send an agency's notices elsewhere."""
    webhook = config.channels.webhook
    named = set(config.audiences.agencies) | set(webhook.by_agency if webhook else {})
    return sorted(named - known)


# -- the ledger ------------------------------------------------------------------------------

# Sensors of one code location are evaluated in one code-server process (in threads when
# the daemon's `sensors.use_threads` is on): one lock makes each read-modify-write whole.
_LOCK = threading.Lock()


@dataclass
class Entry:
    notice: Notice
    fired_at: float  # epoch seconds
    context: dict[str, Any] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)  # channels that delivered the firing notice
    resolution: Notice | None = None
    resolved_sent: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "notice": self.notice.as_dict(),
            "fired_at": self.fired_at,
            "context": self.context,
            "sent": self.sent,
            "resolution": self.resolution.as_dict() if self.resolution else None,
            "resolved_sent": self.resolved_sent,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Entry:
        res = doc.get("resolution")
        return cls(
            notice=Notice.from_dict(doc["notice"]),
            fired_at=float(doc["fired_at"]),
            context=dict(doc.get("context") or {}),
            sent=list(doc.get("sent") or []),
            resolution=Notice.from_dict(res) if res else None,
            resolved_sent=list(doc.get("resolved_sent") or []),
        )


@dataclass
class Ledger:
    """Open notices by key, and which channel delivered what."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def fire(self, n: Notice, now: float, context: Mapping[str, Any] | None = None) -> bool:
        """Record a cause; False when its key is already open (nothing new to send)."""
        if n.key in self.entries:
            return False
        self.entries[n.key] = Entry(n, now, dict(context or {}))
        return True

    def resolve(self, key: str, text: str) -> bool:
        """Mark a cause cleared. A cause no channel was told about is dropped silently."""
        entry = self.entries.get(key)
        if entry is None or entry.resolution is not None:
            return False
        if not entry.sent:
            del self.entries[key]
            return False
        entry.resolution = entry.notice.resolved(text)
        return True

    def open(self, cause: Cause) -> list[Entry]:
        return [
            e
            for e in self.entries.values()
            if e.notice.cause == cause.value and e.resolution is None
        ]

    def dispatch(
        self,
        channels: Sequence[Channel],
        router: Router,
        causes: set[Cause],
        now: float,
        forget_after: dt.timedelta,
    ) -> dict[str, int]:
        """Send what is due on each channel; a failing channel is logged and stays due."""
        tally = {"sent": 0, "failed": 0, "forgotten": 0}
        wanted = {c.value for c in causes}
        for key, entry in list(self.entries.items()):
            if entry.notice.cause not in wanted:
                continue
            if entry.resolution is None and now - entry.fired_at > forget_after.total_seconds():
                log.warning("alert %s: not cleared after %s; forgotten", key, forget_after)
                del self.entries[key]
                tally["forgotten"] += 1
                continue
            if entry.resolution is None:
                todo, done, n = (
                    [c for c in channels if c.name not in entry.sent and c.wants(entry.notice)],
                    entry.sent,
                    entry.notice,
                )
            else:  # resolve only where the firing notice went
                todo = [
                    c
                    for c in channels
                    if c.name in entry.sent and c.name not in entry.resolved_sent
                ]
                done, n = entry.resolved_sent, entry.resolution
            for channel in todo:
                try:
                    channel.send(n, router.addresses(n))
                except ChannelError as exc:
                    log.warning("alert %s (%s): %s; retried next tick", key, n.state, exc)
                    tally["failed"] += 1
                    continue
                done.append(channel.name)
                tally["sent"] += 1
            # done when every channel still configured that got the firing notice got the
            # resolve (a channel removed from alerts.yaml since then is owed nothing)
            owed = set(entry.sent) & {c.name for c in channels}
            if entry.resolution is not None and set(entry.resolved_sent) >= owed:
                del self.entries[key]
        return tally


def _read(instance: dg.DagsterInstance) -> Ledger:
    raw = instance.run_storage.get_cursor_values({LEDGER_KEY}).get(LEDGER_KEY)
    if not raw:
        return Ledger()
    doc = json.loads(raw)
    return Ledger({k: Entry.from_dict(v) for k, v in doc.get("entries", {}).items()})


def _write(instance: dg.DagsterInstance, ledger: Ledger) -> None:
    doc = {"version": 1, "entries": {k: e.as_dict() for k, e in ledger.entries.items()}}
    instance.run_storage.set_cursor_values({LEDGER_KEY: json.dumps(doc, sort_keys=True)})


@contextmanager
def ledger_session(instance: dg.DagsterInstance) -> Iterator[Ledger]:
    """The ledger, read and written back under the process lock (also when sending)."""
    with _LOCK:
        ledger = _read(instance)
        yield ledger
        _write(instance, ledger)


def read_ledger(instance: dg.DagsterInstance) -> Ledger:
    """A snapshot of the ledger (for `flux` commands and tests)."""
    with _LOCK:
        return _read(instance)
