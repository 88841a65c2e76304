"""Tokens that fail verification reach the audit trail, aggregated so a flood stays small.

The intake tests run the real app (FastAPI's TestClient, lifespan included) against a real
issuer (``oidc.running_issuer``: keys fetched over HTTP, RS256 signatures); the ledger tests
drive ``FailedTokenLedger`` with their own clock to cross a window without waiting. Every
record is read back from the real hash-chained trail, which must still verify.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from flux_pipelines.access.failed_tokens import (
    MAX_SAMPLES,
    OTHER_CLIENTS,
    FailedTokenLedger,
    TokenFailure,
)
from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.intake.app import create_app
from flux_pipelines_tests.oidc import Issuer

FLOOD = 1000
STATUS_ROUTE = "GET /v1/deliveries/{delivery_id}"


@pytest.fixture
def home(oidc_home: Path) -> Path:
    return oidc_home


def authenticate_records(home: Path) -> list[dict[str, Any]]:
    return [
        e.payload
        for e in AuditTrail(home).iter_records(kind="access")
        if e.payload.get("action") == "authenticate"
    ]


def test_a_flood_of_forged_tokens_is_counted_into_two_records(home: Path, issuer: Issuer) -> None:
    """1,000 forged tokens from one client within the window: the first is recorded as it
    comes, the other 999 as one record when the intake stops; every attempt got its 401."""
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = [issuer.token(f"victim{i}", ["flux-operators"], key=attacker) for i in range(20)]
    app = create_app(home, failed_token_window=3600)
    with TestClient(app) as client:
        statuses = {
            client.get(
                f"/v1/deliveries/{'0' * 32}",
                headers={"Authorization": f"Bearer {forged[i % len(forged)]}"},
            ).status_code
            for i in range(FLOOD)
        }
        assert statuses == {401}
        [first] = authenticate_records(home)  # the rest is only counted so far
        assert app.state.intake.failed_tokens.pending() == FLOOD - 1
    first, rest = authenticate_records(home)  # the lifespan's end wrote the count
    assert (first["reason"], first["attempts"], first["aggregated"]) == ("bad_signature", 1, False)
    assert first["unverified_subject"] == "victim0" and first["endpoint"] == STATUS_ROUTE
    assert (rest["reason"], rest["client"], rest["aggregated"]) == (
        "bad_signature", "testclient", True,
    )  # fmt: skip
    assert first["attempts"] + rest["attempts"] == FLOOD
    assert rest["endpoints"] == [STATUS_ROUTE]
    assert rest["unverified_subjects"] == [f"victim{i}" for i in range(1, 1 + MAX_SAMPLES)]
    assert rest["first_at"] <= rest["last_at"]
    assert AuditTrail(home).verify().ok


def test_a_valid_token_granting_no_role_is_recorded_as_verified(home: Path, issuer: Issuer) -> None:
    token = issuer.token("drifter", ["some-other-app-users"])
    with TestClient(create_app(home)) as client:
        response = client.get(
            f"/v1/deliveries/{'0' * 32}", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 403
    [record] = authenticate_records(home)
    assert (record["reason"], record["token_verified"]) == ("no_role", True)
    assert record["unverified_subject"] == "drifter"  # the claim, labelled as such


def test_forged_and_expired_tokens_from_one_client_are_counted_apart(
    home: Path, issuer: Issuer
) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = {
        "bad_signature": issuer.token("ada", ["flux-nasa-submitters"], key=attacker),
        "expired": issuer.token("ada", ["flux-nasa-submitters"], lifetime=-120),
    }
    with TestClient(create_app(home)) as client:
        for _ in range(3):
            for token in tokens.values():
                headers = {"Authorization": f"Bearer {token}"}
                assert client.get(f"/v1/deliveries/{'0' * 32}", headers=headers).status_code == 401
    counted: dict[str, int] = {}
    for record in authenticate_records(home):
        counted[record["reason"]] = counted.get(record["reason"], 0) + record["attempts"]
    assert counted == {"bad_signature": 3, "expired": 3}
    assert len(authenticate_records(home)) == 4  # first + count, per reason


# --- the ledger, on its own clock -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def failure(client: str = "10.0.0.1", reason: str = "expired") -> TokenFailure:
    return TokenFailure(reason=reason, client=client, endpoint=STATUS_ROUTE, claimed_subject="x")


def test_a_new_window_starts_after_the_last_one_ends(tmp_path: Path) -> None:
    clock = Clock()
    ledger = FailedTokenLedger(tmp_path, window_seconds=60, clock=clock)
    for _ in range(3):
        ledger.note(failure())
    clock.now += 59
    ledger.note(failure())  # still the first window
    assert [r["attempts"] for r in authenticate_records(tmp_path)] == [1]
    clock.now += 2  # 61 s after the window opened: this attempt opens the next one
    ledger.note(failure())
    records = authenticate_records(tmp_path)
    assert [(r["attempts"], r["aggregated"]) for r in records] == [
        (1, False),
        (3, True),
        (1, False),
    ]
    assert ledger.flush() == 0  # the new window has not ended, and holds no repeat yet
    assert ledger.flush(force=True) == 0
    assert sum(r["attempts"] for r in authenticate_records(tmp_path)) == 5


def test_a_window_ending_quietly_is_written_by_the_periodic_flush(tmp_path: Path) -> None:
    clock = Clock()
    ledger = FailedTokenLedger(tmp_path, window_seconds=60, clock=clock)
    for _ in range(4):
        ledger.note(failure())
    assert ledger.flush() == 0  # not over yet
    clock.now += 60
    assert ledger.flush() == 1
    assert [r["attempts"] for r in authenticate_records(tmp_path)] == [1, 3]
    assert ledger.pending() == 0


def test_clients_beyond_the_cap_are_counted_together(tmp_path: Path) -> None:
    ledger = FailedTokenLedger(tmp_path, max_keys=2, clock=Clock())
    for n in range(50):  # 50 addresses, e.g. a botnet
        ledger.note(failure(client=f"10.0.1.{n}"))
    ledger.flush(force=True)
    records = authenticate_records(tmp_path)
    clients = [r["client"] for r in records]
    assert clients == ["10.0.1.0", "10.0.1.1", OTHER_CLIENTS, OTHER_CLIENTS]
    assert sum(r["attempts"] for r in records) == 50
    assert len(records) <= 2 * 3  # bounded by the cap, not by the number of clients
