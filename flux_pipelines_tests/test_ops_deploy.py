"""The Grafana dashboard and the Prometheus alert rules in deploy/ ask only for series the
exporter really exports: the names come from a real scrape of `flux metrics`' collector."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flux_pipelines.cli.metrics import build_server
from flux_pipelines.instance.config import prepare_dagster_home

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "flux-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "flux-alerts.yaml"
SERIES = re.compile(r"\bflux_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Every series name a real scrape of a fresh home's exporter offers."""
    home = tmp_path_factory.mktemp("ops_home")
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "FLUX_HOME", "DAGSTER_PG_HOST")}
    os.environ.pop("DAGSTER_PG_HOST", None)
    prepare_dagster_home(home)
    instance = dg.DagsterInstance.get()
    server = build_server(
        home, instance, "127.0.0.1", 0, sensor_stale_seconds=600, check_home_writable=True,
        now=lambda: dt.datetime(2026, 1, 12, 12, tzinfo=dt.UTC),
    )  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        names: set[str] = set()
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names |= {s.name for s in family.samples}
            if family.type == "histogram":
                names |= {family.name + suffix for suffix in HISTOGRAM_SUFFIXES}
        yield names
    finally:
        server.shutdown()
        server.server_close()
        instance.dispose()
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def unknown_series(expr: str, exported: set[str]) -> set[str]:
    return set(SERIES.findall(expr)) - exported


def test_the_scrape_offers_every_documented_series(exported: set[str]) -> None:
    assert {
        "flux_runs", "flux_step_duration_seconds_bucket", "flux_rows_in", "flux_rows_curated",
        "flux_rows_quarantined", "flux_quarantine_violations", "flux_deliveries_late",
        "flux_anomaly_days", "flux_certification_holds", "flux_delivery_to_curated_seconds_bucket",
        "flux_audit_trail_verified", "flux_ready", "flux_readiness_failing",
    } <= exported  # fmt: skip


def test_dashboard_panels_query_only_exported_series(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    assert len(panels) >= 8
    queried: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert SERIES.search(expr), f"{panel['title']}: {expr} names no flux series"
            assert not unknown_series(expr, exported), f"{panel['title']}: {expr}"
            queried |= set(SERIES.findall(expr))
    # What the dashboard promises to show.
    promised = (
        "flux_runs", "flux_step_duration_seconds_bucket", "flux_rows_quarantined",
        "flux_deliveries_late", "flux_certification_holds",
        "flux_delivery_to_curated_seconds_bucket", "flux_audit_trail_verified",
    )  # fmt: skip
    for wanted in promised:
        assert wanted in queried, wanted
    # The check can fail: a misspelt series is caught.
    assert unknown_series("sum(flux_rows_curatd)", exported) == {"flux_rows_curatd"}


def test_alert_rules_have_the_rule_file_structure_and_query_exported_series(
    exported: set[str],
) -> None:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(doc) == {"groups"}
    alerts = {}
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            assert re.fullmatch(r"\d+[smhd]", str(rule.get("for", "0m"))), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"], rule["alert"]
            assert SERIES.search(rule["expr"]), rule["alert"]
            assert not unknown_series(rule["expr"], exported), rule["alert"]
            alerts[rule["alert"]] = rule["expr"]
    assert len(alerts) == sum(len(g["rules"]) for g in doc["groups"]), "alert names repeat"
    asked = " ".join(alerts.values())
    for series in ("flux_runs", "flux_deliveries_late", "flux_audit_trail_verified",
                   "flux_ready", "flux_rows_quarantined"):  # fmt: skip
        assert series in asked, series
