"""Issue point 5 (and point 1's override identity): who accessed what, in the audit trail.

Tokens come from a real issuer (RS256, JWKS served over HTTP); the held-back day is a
scorecard row published by the scorecard's own writer; the trail is a real file. Nothing is
mocked: a denied override is an analyst's real, valid token refused by the policy.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from flux_pipelines.access.audit import (
    CACHE_FILE,
    last_seen,
    rebuild_last_seen,
    record_access,
)
from flux_pipelines.access.identity import Identity, TokenVerifier
from flux_pipelines.access.policy import load_policy
from flux_pipelines.audit import AuditRecord, AuditTrail
from flux_pipelines.cli.main import app
from flux_pipelines.contracts.ddl import PARTITION
from flux_pipelines.quality.scorecard import SCORECARD_COLUMNS, write_scorecard
from flux_pipelines_tests.oidc import Issuer, running_issuer

runner = CliRunner()
AGENCIES = {"nasa", "nga", "dod"}
DAY = dt.date(2026, 1, 9)
OPERATORS = ["flux-operators"]
NGA_ANALYSTS = ["flux-nga-analysts"]


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def oidc_env(issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> Issuer:
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FLUX_TOKEN", raising=False)
    return issuer


def who(issuer: Issuer, sub: str, groups: list[str]) -> Identity:
    return TokenVerifier(load_policy()).identify(issuer.token(sub, groups), AGENCIES)


def access_records(home: Path) -> list[dict[str, Any]]:
    return [e.payload for e in AuditTrail(home).iter_records(kind="access")]


def actions(home: Path, subject: str) -> list[str]:
    return [str(p["action"]) for p in access_records(home) if p["identity"]["subject"] == subject]


# --- the recorder ----------------------------------------------------------------------------


def test_a_role_change_is_recorded_once_not_on_every_access(
    tmp_path: Path, oidc_env: Issuer
) -> None:
    ana = who(oidc_env, "ana", NGA_ANALYSTS)
    for _ in range(3):
        record_access(tmp_path, ana, "read_published", "allowed", agency="nga", dataset="x")
    assert actions(tmp_path, "ana") == ["read_published"] * 3  # first sighting: no change

    promoted = who(oidc_env, "ana", [*NGA_ANALYSTS, *OPERATORS])
    assert promoted.role == "operator"
    entries = record_access(tmp_path, promoted, "operate", "allowed")
    assert [e.payload["action"] for e in entries] == ["role_change", "operate"]
    change = entries[0].payload
    assert change["from"] == {"role": "agency_analyst", "agency": "nga"}
    assert change["to"] == {"role": "operator", "agency": None}
    assert change["identity"]["subject"] == "ana" and change["outcome"] == "observed"
    for _ in range(2):
        record_access(tmp_path, promoted, "operate", "allowed")
    bob = who(oidc_env, "bob", OPERATORS)  # someone else's first access changes nothing
    record_access(tmp_path, bob, "operate", "allowed")
    record_access(tmp_path, who(oidc_env, "ana", ["flux-dod-analysts"]), "read_reports", "denied")
    assert actions(tmp_path, "ana") == [
        "read_published", "read_published", "read_published",
        "role_change", "operate", "operate", "operate",
        "role_change", "read_reports",
    ]  # fmt: skip
    last = access_records(tmp_path)[-2]
    assert last["from"] == {"role": "operator", "agency": None}
    assert last["to"] == {"role": "agency_analyst", "agency": "dod"}
    assert actions(tmp_path, "bob") == ["operate"]
    cache = tmp_path / CACHE_FILE
    assert cache.stat().st_mode & 0o777 == 0o600
    assert AuditTrail(tmp_path).verify().ok


def _operate(home: Path, identity: Identity, inherited_lock: int) -> None:
    os.close(inherited_lock)  # the parent's hold on the trail lock, not this worker's
    for _ in range(4):
        record_access(home, identity, "operate", "allowed")


def test_parallel_accesses_of_a_promoted_identity_record_one_role_change(
    tmp_path: Path, oidc_env: Issuer
) -> None:
    """Intake workers serve requests in parallel processes: the change is recorded once.

    The trail's lock is held (as a long pipeline append would hold it) while eight workers
    start, so all of them have looked up the subject's last role before any can append."""
    record_access(tmp_path, who(oidc_env, "ana", NGA_ANALYSTS), "read_published", "allowed")
    promoted = who(oidc_env, "ana", OPERATORS)
    fork = get_context("fork")
    lock = os.open(AuditTrail(tmp_path).lock_path, os.O_RDWR)
    workers = [fork.Process(target=_operate, args=(tmp_path, promoted, lock)) for _ in range(8)]
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for worker in workers:
            worker.start()
        time.sleep(1.0)
    finally:
        os.close(lock)
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * 8
    assert actions(tmp_path, "ana") == ["read_published", "role_change", *["operate"] * 32]
    assert AuditTrail(tmp_path).verify().ok


def test_the_last_seen_cache_is_rebuilt_from_the_trail(tmp_path: Path, oidc_env: Issuer) -> None:
    ana = who(oidc_env, "ana", NGA_ANALYSTS)
    record_access(tmp_path, ana, "read_published", "allowed", agency="nga")
    cache = tmp_path / CACHE_FILE
    stale = cache.read_bytes()  # as the cache was before the role change below
    record_access(tmp_path, who(oidc_env, "ana", OPERATORS), "operate", "allowed")
    built = json.loads(cache.read_bytes())

    cache.unlink()  # missing: rebuilt from the trail's access records
    assert last_seen(tmp_path).subjects["ana"].role == "operator"
    assert json.loads(cache.read_bytes())["subjects"] == built["subjects"]
    cache.write_bytes(stale)  # a crash after the append, before the cache: caught up, no repeat
    record_access(tmp_path, who(oidc_env, "ana", OPERATORS), "operate", "allowed")
    cache.write_text("{not json")  # unreadable: rebuilt
    record_access(tmp_path, who(oidc_env, "ana", OPERATORS), "operate", "allowed")
    assert actions(tmp_path, "ana") == [
        "read_published",
        "role_change",
        "operate",
        "operate",
        "operate",
    ]

    # records appended by others (loads) between accesses are read backwards, not rescanned
    AuditTrail(tmp_path).append(AuditRecord("load", {"rows": 1}, agency="nga"))
    seen = last_seen(tmp_path)
    assert seen.seq == 6 and seen.subjects["ana"].role == "operator"

    # a cache from another home names a record this trail does not hold: rebuilt, not trusted
    other = tmp_path / "other"
    record_access(other, who(oidc_env, "ana", NGA_ANALYSTS), "read_published", "allowed")
    shutil.copy(cache, other / CACHE_FILE)
    assert last_seen(other).subjects["ana"].role == "agency_analyst"
    assert rebuild_last_seen(tmp_path).subjects["ana"].seq == 5


def test_the_recorder_refuses_detail_that_would_shadow_the_record(
    tmp_path: Path, oidc_env: Issuer
) -> None:
    ana = who(oidc_env, "ana", NGA_ANALYSTS)
    with pytest.raises(ValueError, match="may not set"):
        record_access(tmp_path, ana, "read_published", "allowed", detail={"outcome": "allowed"})
    with pytest.raises(ValueError, match="not one of"):
        record_access(tmp_path, ana, "read_published", "ok")  # type: ignore[arg-type]
    assert not AuditTrail(tmp_path).exists()


# --- overrides with a verified identity ------------------------------------------------------


def held_back_day(home: Path) -> None:
    """One published nga/constituents day the anomaly monitors held back (ERROR)."""
    row: dict[str, Any] = {name: None for name, _ in SCORECARD_COLUMNS}
    row.update(
        {"agency": "nga", "dataset": "constituents", PARTITION: DAY, "files": 1,
         "files_rejected": 0, "rows_in": 900, "rows_curated": 900, "rows_quarantined": 0,
         "rows_with_warnings": 0, "reject_rate_pct": 0.0, "rules_fired": 0,
         "anomaly_severity": "ERROR", "anomalies": 1,
         "anomaly_summary": "monitor.count_drop: row_count 900 is 40% below"}
    )  # fmt: skip
    with duckdb.connect() as conn:
        write_scorecard(conn, home / "published", [row])


def override(home: Path, *extra: str, **kwargs: Any) -> Any:
    args = [
        "quality", "override", "--home", str(home), "--agency", "nga", "--dataset",
        "constituents", "--day", DAY.isoformat(), "--reason", "collection split into two feeds",
        *extra,
    ]  # fmt: skip
    return runner.invoke(app, args, **kwargs)


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def test_an_operator_token_overrides_and_is_recorded(tmp_path: Path, oidc_env: Issuer) -> None:
    held_back_day(tmp_path)
    token = oidc_env.token("op-7", OPERATORS, email="olga@ops.example")
    result = override(tmp_path, "--token", str(token_file(tmp_path, token)))
    assert result.exit_code == 0, result.output
    assert "certified by olga@ops.example (operator)" in result.output
    assert token not in result.output
    [decision] = list(AuditTrail(tmp_path).iter_records(kind="override"))
    assert decision.payload["who"] == "olga@ops.example (operator)"
    [access] = access_records(tmp_path)
    assert access["identity"] == {
        "subject": "op-7", "email": "olga@ops.example", "role": "operator", "agency": None
    }  # fmt: skip
    assert (access["action"], access["outcome"]) == ("quality_override", "allowed")
    access_seq = next(AuditTrail(tmp_path).iter_records(kind="access")).seq
    assert decision.seq == access_seq + 1  # one write: the decision and who made it

    # FLUX_TOKEN works too, and the gate now sees the day as overridden
    again = override(tmp_path, env={"FLUX_TOKEN": token})
    assert again.exit_code == 2 and "already overridden" in again.output
    assert AuditTrail(tmp_path).verify().ok


def test_an_analyst_token_is_denied_and_the_attempt_recorded(
    tmp_path: Path, oidc_env: Issuer
) -> None:
    held_back_day(tmp_path)
    token = oidc_env.token("ana", NGA_ANALYSTS, email="ana@nga.example")
    result = override(tmp_path, "--token", "-", input=token)
    assert result.exit_code == 2, result.output
    assert "ana@nga.example (agency_analyst of nga) may not operate" in result.output
    assert "recorded in the audit trail" in result.output
    assert list(AuditTrail(tmp_path).iter_records(kind="override")) == []
    [access] = access_records(tmp_path)
    assert (access["action"], access["outcome"]) == ("quality_override", "denied")
    assert access["identity"]["subject"] == "ana" and "does not allow" in access["reason"]
    [entry] = list(AuditTrail(tmp_path).iter_records(kind="access"))
    assert (entry.agency, entry.dataset, entry.day) == ("nga", "constituents", DAY.isoformat())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda i: i.token("op-7", OPERATORS, lifetime=-120), "the token has expired"),
        (
            lambda i: i.token(
                "op-7",
                OPERATORS,
                key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ),
            "the token is not valid: Signature verification failed",
        ),
        (lambda i: i.token("op-7", OPERATORS, audience="another-app"), "not for Flux"),
        (lambda i: "", "no token in the --token file"),
    ],
    ids=["expired", "forged", "foreign", "empty"],
)
def test_an_expired_or_forged_token_is_refused_clearly(
    tmp_path: Path, oidc_env: Issuer, make: Any, message: str
) -> None:
    held_back_day(tmp_path)
    token = make(oidc_env)
    result = override(tmp_path, "--token", str(token_file(tmp_path, token)))
    assert result.exit_code == 2, result.output
    assert message in result.output
    if token:
        assert token not in result.output and token.split(".")[2] not in result.output
    assert "Traceback" not in result.output
    assert not AuditTrail(tmp_path).exists()  # no identity, no decision: nothing written


def test_a_token_on_the_command_line_or_a_typed_name_is_refused(
    tmp_path: Path, oidc_env: Issuer
) -> None:
    held_back_day(tmp_path)
    token = oidc_env.token("op-7", OPERATORS)
    inline = override(tmp_path, "--token", token)  # the token itself, not a file
    assert inline.exit_code == 2 and "--token takes a file holding the token" in inline.output
    assert token not in inline.output
    by = override(tmp_path, "--by", "ana@nga.example")
    assert by.exit_code == 2
    assert "--by is gone: who overrides now comes from a verified token" in by.output
    missing = override(tmp_path)
    assert missing.exit_code == 2 and "no token in $FLUX_TOKEN" in missing.output
    assert not AuditTrail(tmp_path).exists()


# --- reading access records ------------------------------------------------------------------


def test_audit_show_lists_access_records_readably(tmp_path: Path, oidc_env: Issuer) -> None:
    held_back_day(tmp_path)
    analyst = oidc_env.token("ana", NGA_ANALYSTS, email="ana@nga.example")
    assert override(tmp_path, env={"FLUX_TOKEN": analyst}).exit_code == 2
    record_access(
        tmp_path, who(oidc_env, "sub-42", ["flux-nasa-submitters"]), "upload", "allowed",
        agency="nasa", dataset="meteorites", day=DAY, detail={"file": "meteorites.csv"},
    )  # fmt: skip
    record_access(tmp_path, who(oidc_env, "ana", OPERATORS), "operate", "allowed")
    result = runner.invoke(app, ["audit", "show", "--home", str(tmp_path), "--kind", "access"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "identity (role)" in lines[0] and "action" in lines[0] and "target" in lines[0]
    denied, upload, change, operate = lines[1:]
    assert "ana@nga.example [sub ana] (agency_analyst of nga)" in denied
    assert "quality_override" in denied and "denied" in denied
    assert f"nga/constituents/{DAY.isoformat()}" in denied and "reason=" in denied
    assert "sub-42@example.org [sub sub-42] (agency_submitter of nasa)" in upload
    assert f"nasa/meteorites/{DAY.isoformat()} file=meteorites.csv" in upload
    assert "role_change" in change and "agency_analyst of nga -> operator" in change
    assert "operate" in operate and "allowed" in operate

    mine = runner.invoke(
        app, ["audit", "show", "--home", str(tmp_path), "--who", "ANA@nga.example"]
    )
    assert mine.exit_code == 0
    assert len(mine.output.splitlines()) == 2 and "sub-42" not in mine.output
    by_sub = runner.invoke(app, ["audit", "show", "--home", str(tmp_path), "--who", "ana"])
    assert len(by_sub.output.splitlines()) == 4  # the header and ana's three records
