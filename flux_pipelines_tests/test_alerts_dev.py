"""Alerts on ``flux dev``'s own daemon, end to end: a real ``flux dev`` (webserver, daemon,
code server) on a temp home, its alert settings in a contracts folder named by
``FLUX_CONTRACTS_DIR`` (how a deployment points Flux at its settings), a real SMTP server
(aiosmtpd) and real webhook receivers started here, one per audience.

A first day of 300 rows is loaded before the stack starts (``flux load``). Then the agency
drops a file no reader can decode and, for the next day, half the first day's rows; the
landing sensor starts their runs through the daemon's queue: one fails with the file
rejected whole, the other loads and its anomaly monitors raise an ERROR. The alert sensors,
ticked by the daemon at the intervals alerts.yaml sets, send exactly one notice per channel
for each cause (the rejection to the submitting agency, the run failure to the operators,
the day held back by the anomaly to the agency's owner, and the days nothing was delivered
for as late), then nothing more on their next ticks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_pipelines.contracts.registry import CONTRACTS_DIR_ENV, PROJECT_ROOT
from flux_pipelines.defs.operations.alert_sensors import (
    LATE_SENSOR,
    QUALITY_SENSOR,
    RUN_FAILURE_SENSOR,
)
from flux_pipelines.ingest.manifest import COMPLETION_MARKER
from flux_pipelines_tests.conftest import deliver
from flux_pipelines_tests.receivers import (
    Mailbox,
    Receiver,
    free_port,
    started_receiver,
    wait_for,
)
from flux_pipelines_tests.test_daemon_stack import (
    LOCATION,
    REPOSITORY,
    Stack,
    descendants,
    wait_until_serving,
)

pytestmark = pytest.mark.slow

AGENCY, DATASET, DAY = "nasa", "meteorites", "2026-03-04"
FIRST, SHORT = "2026-03-02", "2026-03-03"  # 300 rows, then 150: a count drop, an ERROR
OWNER = "collections-team@flux.example"  # nasa's owner in agencies.yaml
OPS, SUBMITTER = "ops@flux.example", "submit@nasa.example"
OPS_HOOK_ENV, NASA_HOOK_ENV = "FLUX_DEV_TEST_OPS_WEBHOOK", "FLUX_DEV_TEST_NASA_WEBHOOK"
ALERT_SENSORS = (RUN_FAILURE_SENSOR, QUALITY_SENSOR, LATE_SENSOR)
SENSOR_INTERVAL = 10  # alerts.yaml's run-failure and quality intervals here (the minimum)
NOTICE_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0

SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 20) { status timestamp } } }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture
def hooks() -> Iterator[dict[str, Receiver]]:
    found = {env: started_receiver() for env in (OPS_HOOK_ENV, NASA_HOOK_ENV)}
    yield found
    for hook in found.values():
        hook.close()


def write_contracts(folder: Path, mailbox: Mailbox) -> Path:
    """A contracts folder: the shipped nasa entry (meteorites only, so the late sensor judges
    one dataset), the shipped meteorites contract and settings files, and alerts.yaml."""
    shipped = PROJECT_ROOT / "contracts"
    folder.mkdir()
    doc = yaml.safe_load((shipped / "agencies.yaml").read_text(encoding="utf-8"))
    [nasa] = [a for a in doc["agencies"] if a["id"] == AGENCY]
    agencies = {"agencies": [{**nasa, "datasets": [DATASET]}]}
    (folder / "agencies.yaml").write_text(yaml.safe_dump(agencies), encoding="utf-8")
    (folder / "datasets").mkdir()
    (folder / "datasets" / DATASET).symlink_to(shipped / "datasets" / DATASET)
    for entry in shipped.iterdir():
        if entry.suffix == ".yaml" and entry.name not in ("agencies.yaml", "alerts.yaml"):
            (folder / entry.name).symlink_to(entry)
    alerts = {
        "channels": {
            "email": {"host": "127.0.0.1", "port": mailbox.port, "from": "flux@flux.example",
                      "timeout_seconds": 5},
            "webhook": {"operators": {"url_env": OPS_HOOK_ENV},
                        "by_agency": {AGENCY: {"url_env": NASA_HOOK_ENV}},
                        "timeout_seconds": 5},
        },
        "audiences": {"operators": [OPS], "agencies": {AGENCY: [SUBMITTER]}},
        "thresholds": {"late_lookback_days": 2,
                       "run_failure_interval_seconds": SENSOR_INTERVAL,
                       "quality_interval_seconds": SENSOR_INTERVAL},
    }  # fmt: skip
    (folder / "alerts.yaml").write_text(yaml.safe_dump(alerts), encoding="utf-8")
    return folder


@pytest.fixture
def flux_dev(tmp_path: Path, mailbox: Mailbox, hooks: dict[str, Receiver]) -> Iterator[Stack]:
    """``flux dev`` in its own session, environment as a deployment sets it; always stopped."""
    contracts = write_contracts(tmp_path / "contracts", mailbox)
    home, port, log = tmp_path / "flux", free_port(), tmp_path / "flux_dev.log"
    env = {
        **{k: v for k, v in os.environ.items()
           if k not in ("DAGSTER_HOME", "FLUX_HOME", "FLUX_LOG_FORMAT")
           and not k.startswith("DAGSTER_PG")},
        CONTRACTS_DIR_ENV: str(contracts),
        **{name: hook.url for name, hook in hooks.items()},
    }  # fmt: skip
    deliver(home, AGENCY, DATASET, FIRST, rows=300, seed=11)
    loaded = subprocess.run(
        [sys.executable, "-m", "flux_pipelines.cli.main", "load", "--home", str(home),
         "--agency", AGENCY, "--dataset", DATASET, "--day", FIRST],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert loaded.returncode in (0, 1), loaded.stdout + loaded.stderr  # 1: rows quarantined
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flux_pipelines.cli.main", "dev", "--home", str(home),
             "--port", str(port), "--metrics-port", "off"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )  # fmt: skip
    stack = Stack(process, f"http://127.0.0.1:{port}", log, 0.0)
    try:
        wait_until_serving(stack, started)
        stack.started_seconds = time.monotonic() - started
        yield stack
    finally:
        stop(stack)


def stop(stack: Stack) -> None:
    """SIGTERM ``flux dev`` (it stops its children); only if it has not exited within
    STOP_TIMEOUT, SIGKILL it and what still runs below it."""
    process = stack.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in descendants(process.pid) | {process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()


def sensor_state(stack: Stack, name: str) -> dict[str, Any]:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                "sensorName": name}  # fmt: skip
    found = stack.graphql(SENSOR_TICKS, selector=selector)["sensorOrError"]
    assert found["__typename"] == "Sensor", found
    return found["sensorState"]


def ticks_after(stack: Stack, name: str, after: float) -> int:
    """How many ticks of sensor ``name`` finished after ``after`` (epoch seconds)."""
    ticks = sensor_state(stack, name)["ticks"]
    return sum(t["timestamp"] > after and t["status"] != "STARTED" for t in ticks)


def titled(messages: list[EmailMessage], title: str) -> list[EmailMessage]:
    return [m for m in messages if str(m["Subject"]).strip() == f"[Flux FIRING] {title}"]


def reject_whole(home: Path) -> None:
    """A delivery no reader can decode (delivery.bad_encoding), marked complete."""
    folder = home / "landing" / AGENCY / DATASET / DAY
    folder.mkdir(parents=True)
    (folder / "meteorites.csv").write_bytes(b"id,name\n1,Caf\x94\n")
    (folder / COMPLETION_MARKER).touch()


def test_flux_dev_daemon_sends_one_notice_per_channel_per_cause_and_no_repeat(
    flux_dev: Stack, mailbox: Mailbox, hooks: dict[str, Receiver], tmp_path: Path
) -> None:
    ops_hook, nasa_hook = hooks[OPS_HOOK_ENV], hooks[NASA_HOOK_ENV]
    # configured channels turn the alert sensors on; the daemon evaluates them at once
    for name in ALERT_SENSORS:
        assert sensor_state(flux_dev, name)["status"] == "RUNNING", name
    wait_for(
        "a first tick of every alert sensor",
        lambda: all(ticks_after(flux_dev, n, 0) for n in ALERT_SENSORS),
        60,
        flux_dev.tail,
    )

    dropped = time.monotonic()
    reject_whole(tmp_path / "flux")
    deliver(tmp_path / "flux", AGENCY, DATASET, SHORT, rows=150, seed=12)
    (tmp_path / "flux" / "landing" / AGENCY / DATASET / SHORT / COMPLETION_MARKER).touch()
    rejected, failed = (f"File rejected: {AGENCY}/{DATASET} {DAY}",
                        f"Run failed: {AGENCY}/{DATASET} {DAY}")  # fmt: skip
    held = f"Held back from certification: {AGENCY}/{DATASET} {SHORT}"
    wait_for(
        "the rejection, run-failure and held-back notices on both channels",
        lambda: bool(
            titled(mailbox.messages, rejected) and titled(mailbox.messages, failed)
            and titled(mailbox.messages, held)
            and f"[Flux FIRING] {rejected}" in nasa_hook.texts()
            and f"[Flux FIRING] {failed}" in ops_hook.texts()
            and f"[Flux FIRING] {held}" in nasa_hook.texts()
        ),
        NOTICE_TIMEOUT,
        lambda: f"mail: {mailbox.subjects()}\nops: {ops_hook.texts()}\n"
        f"nasa: {nasa_hook.texts()}\n{flux_dev.tail()}",
    )  # fmt: skip
    notified = time.monotonic() - dropped

    # the next ticks of both sensors that raised them send nothing again
    since = time.time()
    quiet = wait_for(
        "two more ticks of the run-failure and quality sensors",
        lambda: all(ticks_after(flux_dev, n, since) >= 2
                    for n in (RUN_FAILURE_SENSOR, QUALITY_SENSOR)),
        4 * SENSOR_INTERVAL + 30,
        flux_dev.tail,
    )  # fmt: skip

    [mail] = titled(mailbox.messages, rejected)
    assert mail["X-Rcpt"] == SUBMITTER
    body = mail.get_content()
    assert "meteorites.csv" in body and "delivery.bad_encoding" in body and DAY in body
    [mail] = titled(mailbox.messages, failed)
    assert mail["X-Rcpt"] == OPS
    assert nasa_hook.texts().count(f"[Flux FIRING] {rejected}") == 1
    assert ops_hook.texts().count(f"[Flux FIRING] {failed}") == 1
    assert f"[Flux FIRING] {rejected}" not in ops_hook.texts()  # each audience its own channel
    assert f"[Flux FIRING] {failed}" not in nasa_hook.texts()
    [mail] = titled(mailbox.messages, held)  # the anomaly ERROR, to the agency's owner
    assert mail["X-Rcpt"] == OWNER and "monitor.count_drop" in mail.get_content()
    assert nasa_hook.texts().count(f"[Flux FIRING] {held}") == 1

    # nothing delivered for yesterday (past nasa's 09:00 deadline): late, told once each
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    late = f"Late delivery: {AGENCY}/{DATASET} {yesterday}"
    [mail] = titled(mailbox.messages, late)
    assert set(mail["X-Rcpt"].split(", ")) == {OPS, OWNER}
    assert ops_hook.texts().count(f"[Flux FIRING] {late}") == 1
    assert nasa_hook.texts().count(f"[Flux FIRING] {late}") == 1
    assert len(mailbox.subjects()) == len(set(mailbox.subjects())), mailbox.subjects()
    for hook in (ops_hook, nasa_hook):
        assert len(hook.texts()) == len(set(hook.texts())), hook.texts()

    print(
        f"\nflux dev serving after {flux_dev.started_seconds:.1f}s; rejected file dropped -> "
        f"both notices on both channels {notified:.1f}s; two quiet ticks {quiet:.1f}s; "
        f"{len(mailbox.messages)} e-mails, {len(ops_hook.bodies)} + {len(nasa_hook.bodies)} "
        "webhook posts"
    )
