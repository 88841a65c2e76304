"""Alerts notify once per cause, agency, dataset and day, and once more when the cause clears.

Real receivers (an aiosmtpd SMTP server, an http.server webhook receiver), a real Dagster
instance in a temp folder, real ingest runs (a file rejected whole fails its run for real),
and the shipped sensors evaluated the way the daemon would.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from flux_pipelines.audit.trail import AuditTrail, override_record
from flux_pipelines.contracts.registry import Registry, load_registry
from flux_pipelines.defs.operations.alert_sensors import (
    LATE_SENSOR,
    QUALITY_SENSOR,
    RUN_FAILURE_SENSOR,
    alert_sensors,
)
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.ops.alerts import load_alerts_config, read_ledger
from flux_pipelines_tests.conftest import deliver, materialize
from flux_pipelines_tests.receivers import Mailbox, Receiver, started_receiver

AGENCY, DATASET, DAY = "nasa", "meteorites", "2026-02-02"
OWNER = "collections-team@flux.example"  # nasa's owner in agencies.yaml
OPS, SUBMITTER = "ops@flux.example", "submit@nasa.example"
HOOK_ENV = "FLUX_TEST_ALERT_WEBHOOK"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    hook = started_receiver()
    monkeypatch.setenv(HOOK_ENV, hook.url)
    yield hook
    hook.close()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


def _config(tmp_path: Path, mailbox: Mailbox, webhook_format: str = "slack") -> Path:
    path = tmp_path / "alerts.yaml"
    doc = {
        "channels": {
            "email": {"host": "127.0.0.1", "port": mailbox.port, "from": "flux@flux.example",
                      "timeout_seconds": 3},
            "webhook": {"url_env": HOOK_ENV, "format": webhook_format, "timeout_seconds": 3},
        },
        "audiences": {"operators": [OPS], "agencies": {AGENCY: [SUBMITTER]}},
        "thresholds": {"late_lookback_days": 1},
        "ui_url": "http://flux-ui.example",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


class Sensors:
    """The three alert sensors, evaluated as the daemon would (the cursor carried over)."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        config: Path,
        home: Path,
        registry: Registry | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        self.instance = instance
        clock = now or dt.datetime.now(dt.UTC)
        built = alert_sensors(
            registry or load_registry(), config_path=config, home=home, clock=lambda: clock
        )
        self.by_name = {s.name: s for s in built}
        self.cursors: dict[str, str | None] = {}

    def run_failed(self, run_id: str) -> None:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        [record] = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        context = dg.build_run_status_sensor_context(
            sensor_name=RUN_FAILURE_SENSOR,
            dagster_event=record.event_log_entry.dagster_event,
            dagster_instance=self.instance,
            dagster_run=run,
        ).for_run_failure()
        self.by_name[RUN_FAILURE_SENSOR](context)

    def tick(self, name: str) -> None:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(name))
        self.by_name[name](context)
        self.cursors[name] = context.cursor


def _reject(home: Path, day: str = DAY) -> None:
    """A file no reader can decode: rejected whole (delivery.bad_encoding)."""
    folder = home / "landing" / AGENCY / DATASET / day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meteorites.csv").write_bytes(b"id,name\n1,Caf\x94\n")


def _replace_with_good(home: Path, day: str = DAY) -> None:
    for old in (home / "landing" / AGENCY / DATASET / day).iterdir():
        old.unlink()
    deliver(home, AGENCY, DATASET, day, rows=60, seed=4)


def _where(text: str) -> bool:
    return AGENCY in text and DATASET in text and DAY in text


def test_a_failed_run_and_a_rejected_file_notify_once_and_resolve_once(
    tmp_path: Path, mailbox: Mailbox, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    sensors = Sensors(instance, _config(tmp_path, mailbox), tmp_path)
    _reject(tmp_path)
    failed = materialize(tmp_path, [(AGENCY, DATASET)], DAY, instance=instance)
    assert not failed.success

    # Dagster will retry it: no notice yet; retried out: one notice
    instance.add_run_tags(failed.run_id, {"dagster/will_retry": "true"})
    sensors.run_failed(failed.run_id)
    assert mailbox.messages == [] and receiver.bodies == []
    instance.add_run_tags(failed.run_id, {"dagster/will_retry": "false"})
    sensors.run_failed(failed.run_id)
    sensors.run_failed(failed.run_id)  # evaluated again (a restart): still one
    [mail] = mailbox.messages
    [post] = receiver.bodies
    assert mail["Subject"].strip() == f"[Flux FIRING] Run failed: {AGENCY}/{DATASET} {DAY}"
    assert mail["X-Rcpt"] == OPS
    body = mail.get_content()
    assert _where(body) and failed.run_id in body and "delivery.bad_encoding" in body
    assert f"http://flux-ui.example/runs/{failed.run_id}" in body
    assert _where(post["text"]) and "FIRING" in post["text"]
    assert failed.run_id in json.dumps(post["blocks"])

    # the same failure seen from the event log: the file was rejected whole
    sensors.tick(QUALITY_SENSOR)
    sensors.tick(QUALITY_SENSOR)
    assert len(mailbox.messages) == 2 and len(receiver.bodies) == 2
    rejected = mailbox.messages[1]
    assert rejected["Subject"].strip() == f"[Flux FIRING] File rejected: {AGENCY}/{DATASET} {DAY}"
    assert rejected["X-Rcpt"] == SUBMITTER
    assert "meteorites.csv" in rejected.get_content()
    assert "delivery.bad_encoding" in rejected.get_content()

    # the agency replaces the file; the re-run loads the day: one resolve per cause and channel
    _replace_with_good(tmp_path)
    assert materialize(tmp_path, [(AGENCY, DATASET)], DAY, instance=instance).success
    sensors.tick(QUALITY_SENSOR)
    sensors.tick(QUALITY_SENSOR)
    sensors.run_failed(failed.run_id)  # the old failure seen again: not re-opened
    resolved = sorted(s for s in mailbox.subjects() if s.startswith("[Flux RESOLVED]"))
    assert resolved == [
        f"[Flux RESOLVED] Resolved: File rejected: {AGENCY}/{DATASET} {DAY}",
        f"[Flux RESOLVED] Resolved: Run failed: {AGENCY}/{DATASET} {DAY}",
    ]
    assert len(mailbox.messages) == 4 and len(receiver.bodies) == 4
    assert sum("RESOLVED" in b["text"] for b in receiver.bodies) == 2
    assert read_ledger(instance).entries == {}


def test_a_late_delivery_notifies_once_and_resolves_when_it_loads(
    tmp_path: Path, mailbox: Mailbox, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    registry = load_registry()
    nasa = registry.agency(AGENCY).model_copy(
        update={"datasets": (DATASET,), "delivery_deadline": "0 9 * * *"}
    )
    only_nasa = registry.model_copy(update={"agencies": (nasa,)})
    after_deadline = dt.datetime(2026, 2, 2, 10, 0, tzinfo=dt.UTC)  # due 09:00
    sensors = Sensors(instance, _config(tmp_path, mailbox), tmp_path, only_nasa, after_deadline)

    sensors.tick(LATE_SENSOR)
    sensors.tick(LATE_SENSOR)
    [mail] = mailbox.messages
    [post] = receiver.bodies
    assert mail["Subject"].strip() == f"[Flux FIRING] Late delivery: {AGENCY}/{DATASET} {DAY}"
    assert set(mail["X-Rcpt"].split(", ")) == {OPS, OWNER}
    assert "due 2026-02-02 09:00 UTC" in mail.get_content()
    assert _where(post["text"])

    deliver(tmp_path, AGENCY, DATASET, DAY, rows=60, seed=5)
    assert materialize(tmp_path, [(AGENCY, DATASET)], DAY, instance=instance).success
    sensors.tick(LATE_SENSOR)
    sensors.tick(LATE_SENSOR)
    assert mailbox.subjects()[1:] == [
        f"[Flux RESOLVED] Resolved: Late delivery: {AGENCY}/{DATASET} {DAY}"
    ]
    assert len(receiver.bodies) == 2 and "RESOLVED" in receiver.bodies[1]["text"]


def test_an_anomaly_error_notifies_the_owner_once_until_overridden(
    tmp_path: Path, mailbox: Mailbox, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    sensors = Sensors(instance, _config(tmp_path, mailbox), tmp_path)
    first, second = "2026-02-02", "2026-02-03"
    deliver(tmp_path, AGENCY, DATASET, first, rows=300, seed=11)
    deliver(tmp_path, AGENCY, DATASET, second, rows=150, seed=12)  # half the volume: ERROR
    for day in (first, second):
        assert materialize(tmp_path, [(AGENCY, DATASET)], day, instance=instance).success
    sensors.tick(QUALITY_SENSOR)
    sensors.tick(QUALITY_SENSOR)
    [mail] = mailbox.messages
    [post] = receiver.bodies
    title = f"Held back from certification: {AGENCY}/{DATASET} {second}"
    assert mail["Subject"].strip() == f"[Flux FIRING] {title}"
    assert mail["X-Rcpt"] == OWNER
    assert "monitor.count_drop" in mail.get_content()
    assert title in post["text"] or title in json.dumps(post["blocks"])

    AuditTrail(tmp_path).append(
        override_record("operator@flux.example", "confirmed with the agency: a short day",
                        agency=AGENCY, dataset=DATASET, day=second, overrides="anomalies ERROR")
    )  # fmt: skip
    sensors.tick(QUALITY_SENSOR)
    sensors.tick(QUALITY_SENSOR)
    assert mailbox.subjects()[1:] == [f"[Flux RESOLVED] Resolved: {title}"]
    assert "Overridden by operator@flux.example" in mailbox.messages[1].get_content()
    assert len(receiver.bodies) == 2


def test_a_channel_that_is_down_neither_blocks_the_other_nor_loses_the_notice(
    tmp_path: Path, mailbox: Mailbox, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    sensors = Sensors(instance, _config(tmp_path, mailbox, webhook_format="teams"), tmp_path)
    _reject(tmp_path)
    failed = materialize(tmp_path, [(AGENCY, DATASET)], DAY, instance=instance)
    mailbox.stop()
    sensors.run_failed(failed.run_id)
    [card] = receiver.bodies  # the webhook got it although the mail server is down
    assert card["@type"] == "MessageCard" and failed.run_id in card["text"]
    assert {"name": "where", "value": f"{AGENCY}/{DATASET} {DAY}"} in card["sections"][0]["facts"]
    assert mailbox.messages == []

    mailbox.start()
    sensors.tick(QUALITY_SENSOR)  # the next tick retries the e-mail (and sends the rejection)
    subjects = mailbox.subjects()
    assert subjects.count(f"[Flux FIRING] Run failed: {AGENCY}/{DATASET} {DAY}") == 1
    assert sum("Run failed" in b["title"] for b in receiver.bodies) == 1


def test_alerts_config_errors_are_clear_and_no_channel_means_stopped(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "channels:\n  email: {host: smtp, from: a@b.example, password: hunter2}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match=r"alerts\.yaml.*password_env"):
        load_alerts_config(path)
    path.write_text("channels:\n  webhook: {url_env: X, format: email}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"channels\.webhook\.format"):
        load_alerts_config(path)
    path.write_text("thresholds: {late_lookback_day: 3}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="late_lookback_day"):
        load_alerts_config(path)

    quiet = alert_sensors(load_registry(), config_path=tmp_path / "absent.yaml")
    assert {s.default_status for s in quiet} == {dg.DefaultSensorStatus.STOPPED}
    path.write_text("channels:\n  webhook: {url_env: X}\n", encoding="utf-8")
    loud = alert_sensors(load_registry(), config_path=path)
    assert {s.default_status for s in loud} == {dg.DefaultSensorStatus.RUNNING}
    assert len(loud) == 3  # one set for every agency


OPS_HOOK_ENV, AGENCIES_HOOK_ENV, NASA_HOOK_ENV = (
    "FLUX_TEST_OPS_WEBHOOK", "FLUX_TEST_AGENCIES_WEBHOOK", "FLUX_TEST_NASA_WEBHOOK",
)  # fmt: skip


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Receiver]]:
    """Three real webhook receivers: the operators', every agency's, and nasa's own."""
    found = {env: started_receiver() for env in (OPS_HOOK_ENV, AGENCIES_HOOK_ENV, NASA_HOOK_ENV)}
    for env, hook in found.items():
        monkeypatch.setenv(env, hook.url)
    yield found
    for hook in found.values():
        hook.close()


def _routed_config(tmp_path: Path, mailbox: Mailbox) -> Path:
    path = tmp_path / "alerts.yaml"
    doc = {
        "channels": {
            "email": {"host": "127.0.0.1", "port": mailbox.port, "from": "flux@flux.example"},
            "webhook": {
                "format": "slack",
                "operators": {"url_env": OPS_HOOK_ENV},
                "agencies": {"url_env": AGENCIES_HOOK_ENV},
                "by_agency": {AGENCY: {"url_env": NASA_HOOK_ENV, "format": "teams"}},
            },
        },
        "audiences": {"operators": [OPS], "agencies": {AGENCY: [SUBMITTER]}},
        "thresholds": {"late_lookback_days": 1},
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_a_webhook_per_audience_reaches_operators_and_each_agency_on_their_own(
    tmp_path: Path, mailbox: Mailbox, hooks: dict[str, Receiver], instance: dg.DagsterInstance
) -> None:
    ops, agencies, nasa = (hooks[e] for e in (OPS_HOOK_ENV, AGENCIES_HOOK_ENV, NASA_HOOK_ENV))
    registry = load_registry()
    two = tuple(
        registry.agency(a).model_copy(update={"datasets": (d,), "delivery_deadline": "0 9 * * *"})
        for a, d in ((AGENCY, DATASET), ("national-archives", "constituents"))
    )
    config = _routed_config(tmp_path, mailbox)

    # late (operators + owner): each agency's owner hears on its own webhook, operators on theirs
    after_deadline = dt.datetime(2026, 2, 2, 10, 0, tzinfo=dt.UTC)
    late = Sensors(
        instance, config, tmp_path, registry.model_copy(update={"agencies": two}), after_deadline
    )
    late.tick(LATE_SENSOR)
    late.tick(LATE_SENSOR)
    assert sorted(ops.texts()) == [
        f"[Flux FIRING] Late delivery: {AGENCY}/{DATASET} {DAY}",
        f"[Flux FIRING] Late delivery: national-archives/constituents {DAY}",
    ]
    assert nasa.texts() == [f"[Flux FIRING] Late delivery: {AGENCY}/{DATASET} {DAY}"]
    assert nasa.bodies[0]["@type"] == "MessageCard"  # nasa's own format
    assert agencies.texts() == [
        f"[Flux FIRING] Late delivery: national-archives/constituents {DAY}"
    ]
    assert "blocks" in agencies.bodies[0]  # the block's default format: Slack

    # a file rejected whole: the run failure to the operators, the rejection to nasa only
    sensors = Sensors(instance, config, tmp_path)
    _reject(tmp_path)
    failed = materialize(tmp_path, [(AGENCY, DATASET)], DAY, instance=instance)
    assert not failed.success
    sensors.run_failed(failed.run_id)
    sensors.tick(QUALITY_SENSOR)
    sensors.tick(QUALITY_SENSOR)
    assert ops.texts()[2:] == [f"[Flux FIRING] Run failed: {AGENCY}/{DATASET} {DAY}"]
    assert nasa.texts()[1:] == [f"[Flux FIRING] File rejected: {AGENCY}/{DATASET} {DAY}"]
    assert len(agencies.bodies) == 1  # nothing of nasa's reached the shared agencies' channel
    rejected = [m for m in mailbox.messages if "File rejected" in str(m["Subject"])]
    assert [m["X-Rcpt"] for m in rejected] == [SUBMITTER]

    # one agency's webhook down: its notice waits for it; the operators' still goes out
    nasa.close()
    _replace_with_good(tmp_path)
    assert materialize(tmp_path, [(AGENCY, DATASET)], DAY, instance=instance).success
    sensors.tick(QUALITY_SENSOR)
    assert ops.texts()[3:] == [f"[Flux RESOLVED] Resolved: Run failed: {AGENCY}/{DATASET} {DAY}"]
    ledger = read_ledger(instance).entries
    assert f"run_failure|{AGENCY}|{DATASET}|{DAY}" not in ledger  # resolved everywhere
    rejection = ledger[f"rejected|{AGENCY}|{DATASET}|{DAY}"]  # its resolve is still due
    assert rejection.sent == ["email", "webhook:agency:nasa"]
    assert rejection.resolved_sent == ["email"]


def test_webhook_routes_are_validated_and_the_single_url_form_still_holds(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text("channels:\n  webhook: {url_env: ONE, format: teams}\n", encoding="utf-8")
    single = load_alerts_config(path).channels.webhook
    assert single is not None and single.targets() == {"webhook": single.targets()["webhook"]}
    assert {single.route(a, AGENCY) for a in ("operators", "owner", "agency")} == {"webhook"}

    path.write_text(
        "channels:\n  webhook:\n    url_env: REST\n    operators: {url_env: OPS}\n",
        encoding="utf-8",
    )
    mixed = load_alerts_config(path).channels.webhook
    assert mixed is not None
    assert (mixed.route("operators", AGENCY), mixed.route("owner", AGENCY)) == (
        "webhook:operators",
        "webhook",
    )

    path.write_text("channels:\n  webhook: {format: slack}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"channels\.webhook.*no webhook URL"):
        load_alerts_config(path)
    path.write_text(
        "channels:\n  webhook:\n    operators: {url: https://hooks.example/x}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigurationError, match=r"operators.*url_env"):
        load_alerts_config(path)
    path.write_text(
        "channels:\n  webhook:\n    by_agency:\n      nassa: {url_env: X}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigurationError, match=r"alerts\.yaml.*nassa.*agencies\.yaml"):
        alert_sensors(load_registry(), config_path=path)


def test_a_resolve_owed_to_a_channel_removed_from_the_file_does_not_linger(
    tmp_path: Path, mailbox: Mailbox, receiver: Receiver, instance: dg.DagsterInstance
) -> None:
    """A notice sent on the single-URL webhook, then the file moves to per-audience
    webhooks: the resolve goes where it still can, and the ledger forgets the cause."""
    _reject(tmp_path)
    failed = materialize(tmp_path, [(AGENCY, DATASET)], DAY, instance=instance)
    before = Sensors(instance, _config(tmp_path, mailbox), tmp_path)  # the single-URL form
    before.run_failed(failed.run_id)
    assert read_ledger(instance).entries[f"run_failure|{AGENCY}|{DATASET}|{DAY}"].sent == [
        "email",
        "webhook",
    ]
    routed = _config(tmp_path, mailbox)
    doc = yaml.safe_load(routed.read_text(encoding="utf-8"))
    doc["channels"]["webhook"] = {"operators": {"url_env": HOOK_ENV}}
    routed.write_text(yaml.safe_dump(doc), encoding="utf-8")
    after = Sensors(instance, routed, tmp_path)
    _replace_with_good(tmp_path)
    assert materialize(tmp_path, [(AGENCY, DATASET)], DAY, instance=instance).success
    after.tick(QUALITY_SENSOR)
    assert (
        mailbox.subjects()[-1] == f"[Flux RESOLVED] Resolved: Run failed: {AGENCY}/{DATASET} {DAY}"
    )
    assert len(receiver.bodies) == 1  # the webhook it went to is gone: no resolve there
    assert f"run_failure|{AGENCY}|{DATASET}|{DAY}" not in read_ledger(instance).entries
