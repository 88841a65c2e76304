"""The Prometheus exporter after real loads: every value equals what the stores say.

Loads run through Dagster (in process) into a home with a persistent instance; the exporter
serves on a real socket (in a thread, with a fixed clock for the delivery-status window, or
as the `flux metrics` process); the values are compared with the agency's DuckDB file
(opened here, after the loads, never by the exporter) and with Dagster's run records.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flux_pipelines.cli.metrics import build_server
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.instance.config import prepare_dagster_home
from flux_pipelines.names import agency_db
from flux_pipelines.quality.delivery_status import classify, day_range
from flux_pipelines_tests.conftest import deliver, materialize

AGENCY, DATASET = "nasa", "meteorites"
DAYS = ("2026-01-05", "2026-01-06")
# A fixed clock: a week after the loads, so every other agency's weekdays are late.
NOW = dt.datetime(2026, 1, 12, 12, 0, tzinfo=dt.UTC)
LATE_AGENCY = "nga"  # delivers nothing here


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value of a scrape."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    return scrape[(name, frozenset(labels.items()))]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A home where nasa/meteorites loaded two days, the first of them twice."""
    home = tmp_path_factory.mktemp("metrics_home")
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "FLUX_HOME", "DAGSTER_PG_HOST")}
    os.environ.pop("DAGSTER_PG_HOST", None)
    prepare_dagster_home(home)
    (home / "landing").mkdir(exist_ok=True)
    instance = dg.DagsterInstance.get()
    for n, day in enumerate(DAYS):
        deliver(home, AGENCY, DATASET, day, rows=120, seed=10 + n)
        assert materialize(home, [(AGENCY, DATASET)], day, instance=instance).success
    # The same day again: the counts must be replaced, not added.
    assert materialize(home, [(AGENCY, DATASET)], DAYS[0], instance=instance).success
    yield home, instance
    instance.dispose()
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@pytest.fixture(scope="module")
def exporter(loaded: tuple[Path, Any]) -> Iterator[str]:
    """The exporter on a real socket (port 0), in a thread, with the fixed clock."""
    home, instance = loaded
    server = build_server(
        home, instance, "127.0.0.1", 0,
        sensor_stale_seconds=600, check_home_writable=True, now=lambda: NOW,
    )  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def warehouse_counts(home: Path) -> tuple[int, int]:
    """Curated rows and quarantined rows, as the agency file holds them."""
    with duckdb.connect(str(agency_db(home, AGENCY)), read_only=True) as conn:
        (curated,) = conn.execute(f"SELECT count(*) FROM {DATASET}").fetchone()
        (quarantined,) = conn.execute(
            f"SELECT count(DISTINCT (_file, _partition_date, _row_number)) "
            f"FROM {DATASET}_quarantine"
        ).fetchone()
    return curated, quarantined


def test_rows_match_the_agency_file_and_a_reload_does_not_double(
    loaded: tuple[Path, Any], exporter: str
) -> None:
    home, _ = loaded
    status, text = get(exporter + "/metrics")
    assert status == 200
    scrape = samples(text)
    curated, quarantined = warehouse_counts(home)
    assert curated > 0 and quarantined > 0
    pair = {"agency": AGENCY, "dataset": DATASET}
    assert value(scrape, "flux_rows_curated", **pair) == curated
    assert value(scrape, "flux_rows_quarantined", **pair) == quarantined
    assert value(scrape, "flux_rows_in", **pair) == curated + quarantined == 240
    assert value(scrape, "flux_days_loaded", **pair) == len(DAYS)
    by_rule = [
        v for (name, labels), v in scrape.items()
        if name == "flux_quarantine_violations" and dict(labels).get("agency") == AGENCY
    ]  # fmt: skip
    assert by_rule and sum(by_rule) >= quarantined
    # Arrival -> curated latency: one observation per loaded day, not per load.
    assert value(scrape, "flux_delivery_to_curated_seconds_count", **pair) == len(DAYS)
    assert all(v == 0 for (name, _), v in scrape.items() if name == "flux_collector_errors")


def test_runs_by_status_match_dagster(loaded: tuple[Path, Any], exporter: str) -> None:
    _, instance = loaded
    scrape = samples(get(exporter + "/metrics")[1])
    expected: dict[tuple[str, str], int] = {}
    for record in instance.get_run_records():
        run = record.dagster_run
        expected[(run.job_name, run.status.value)] = (
            expected.get((run.job_name, run.status.value), 0) + 1
        )
    exported = {
        (dict(labels)["job"], dict(labels)["status"]): v
        for (name, labels), v in scrape.items()
        if name == "flux_runs"
    }
    assert exported == expected and sum(expected.values()) == 3
    successes = sum(
        v for (name, labels), v in scrape.items()
        if name == "flux_step_duration_seconds_count" and dict(labels)["status"] == "success"
    )  # fmt: skip
    assert successes >= 3


def test_late_deliveries_follow_the_deadline(loaded: tuple[Path, Any], exporter: str) -> None:
    scrape = samples(get(exporter + "/metrics")[1])
    registry = load_registry()
    agency = registry.agency(LATE_AGENCY)
    days = day_range(NOW.date(), 14)
    for dataset in agency.datasets:
        late = sum(classify(agency, dataset, d, None, NOW).state == "late" for d in days)
        assert late > 0
        exported = value(scrape, "flux_deliveries_late", agency=LATE_AGENCY, dataset=dataset)
        assert exported == late
    # nasa/meteorites delivered Jan 5 and 6: those are loaded, not late.
    loaded_days = value(scrape, "flux_delivery_days", agency=AGENCY, dataset=DATASET,
                        state="loaded")  # fmt: skip
    assert loaded_days == len(DAYS)


def test_readiness_and_audit_status_flip_with_the_home(
    loaded: tuple[Path, Any], exporter: str
) -> None:
    home, _ = loaded
    status, body = get(exporter + "/readyz")
    assert (status, json.loads(body)["status"]) == (200, "ready"), body
    assert get(exporter + "/healthz")[0] == 200
    scrape = samples(get(exporter + "/metrics")[1])
    assert value(scrape, "flux_audit_trail_verified") == 1
    assert value(scrape, "flux_audit_trail_records") > 0
    assert value(scrape, "flux_ready") == 1

    # The landing zone replaced by a link.
    landing = home / "landing"
    landing.rename(home / "landing.real")
    landing.symlink_to(home / "landing.real")
    try:
        status, body = get(exporter + "/readyz")
        assert status == 503
        (problem,) = json.loads(body)["problems"]
        assert problem["check"] == "landing" and "link" in problem["reason"]
    finally:
        landing.unlink()
        (home / "landing.real").rename(landing)
    assert get(exporter + "/readyz")[0] == 200

    # One record of the trail edited in place (same length): verify fails, readiness too.
    trail = home / "audit" / "trail.jsonl"
    original = trail.read_bytes()
    lines = original.splitlines(keepends=True)
    first = json.loads(lines[0])
    edited = json.dumps({**first, "ts": first["ts"][:-2] + "00"}, separators=(",", ":"))
    assert len(edited) == len(lines[0].rstrip(b"\n"))
    trail.write_bytes(edited.encode() + b"\n" + b"".join(lines[1:]))
    try:
        scrape = samples(get(exporter + "/metrics")[1])
        assert value(scrape, "flux_audit_trail_verified") == 0
        assert value(scrape, "flux_audit_trail_problems") >= 1
        assert value(scrape, "flux_readiness_failing", check="audit") == 1
        status, body = get(exporter + "/readyz")
        assert status == 503
        assert [p["check"] for p in json.loads(body)["problems"]] == ["audit"]
    finally:
        trail.write_bytes(original)
    scrape = samples(get(exporter + "/metrics")[1])
    assert value(scrape, "flux_audit_trail_verified") == 1
    assert get(exporter + "/readyz")[0] == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_flux_metrics_process_reports_a_read_only_home(loaded: tuple[Path, Any]) -> None:
    """`flux metrics` as its own process, over the home mounted read-only (a private mount
    namespace; the instance's folder stays writable, as on a separate volume): /readyz says
    503 naming the home; /metrics still serves."""
    home, _ = loaded
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to mount the home read-only"
    port = free_port()
    flux = [sys.executable, "-m", "flux_pipelines.cli.main"]
    script = (
        'mount --bind "$H" "$H" && mount --bind "$H/dagster_home" "$H/dagster_home" && '
        'mount -o remount,ro,bind "$H" && exec "$@"'
    )
    env = {**os.environ, "H": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    env.pop("DAGSTER_PG_HOST", None)
    command = [unshare, "-m", "sh", "-c", script, "sh", *flux, "metrics", "--home", str(home),
               "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "flux metrics did not answer within 60 s"
            time.sleep(0.3)
        status, body = get(base + "/readyz")
        assert status == 503, body
        problems = json.loads(body)["problems"]
        assert [p["check"] for p in problems] == ["home"], problems
        assert "not writable" in problems[0]["reason"]
        status, text = get(base + "/metrics")
        scrape = samples(text)
        assert value(scrape, "flux_rows_in", agency=AGENCY, dataset=DATASET) == 240
        assert value(scrape, "flux_readiness_failing", check="home") == 1
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_slo_series_are_the_slo_report(loaded: tuple[Path, Any], exporter: str) -> None:
    """The exported objectives are ``flux slo report``'s figures (one evaluation), and the
    run objective counts the runs Dagster holds."""
    from flux_pipelines.ops.slo import evaluate

    home, instance = loaded
    scrape = samples(get(exporter + "/metrics")[1])
    results = evaluate(home, instance, load_registry(), now=NOW)
    assert results
    for r in results:
        key = {"objective": r.id, "window": r.window}
        assert value(scrape, "flux_slo_events", **key, outcome="good") == r.good
        assert value(scrape, "flux_slo_events", **key, outcome="bad") == r.bad
        assert value(scrape, "flux_slo_target", **key) == r.target
        assert value(scrape, "flux_slo_error_budget_left_ratio", **key) == r.budget_left_pct / 100
    # the runs happened now, not at the fixed clock: measured now they are the three loads
    today = evaluate(home, instance, load_registry(), now=dt.datetime.now(dt.UTC))
    runs = next(r for r in today if r.kind == "run_success")
    assert (runs.good, runs.total) == (3, 3)
