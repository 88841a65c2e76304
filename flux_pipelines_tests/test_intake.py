"""The intake service (``flux serve``): who may upload and read what, and what lands where.

Nothing is mocked: tokens are real RS256 JWTs whose keys the verifier fetches over HTTP
(``oidc.running_issuer``), files land on disk, the load is a real Dagster materialization,
and one test talks to ``flux serve`` through a socket.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.intake.app import create_app
from flux_pipelines.intake.checks import check_day, check_name
from flux_pipelines.intake.errors import IntakeRefused
from flux_pipelines.intake.staging import WRITE_BLOCK
from flux_pipelines_tests.oidc import Issuer

DAY = "2026-01-05"  # nasa and dod were onboarded that day
NEXT_DAY = "2026-01-06"
LIMIT = 2 * WRITE_BLOCK  # the size limit of these tests: above one write block
NASA_SUBMITTER = ("ada", ["flux-nasa-submitters"])
DOD_SUBMITTER = ("dan", ["flux-dod-submitters"])
NASA_ANALYST = ("nia", ["flux-nasa-analysts"])
NASA_PERSONAL = ("pia", ["flux-nasa-analysts", "flux-nasa-personal-data"])
DOD_ANALYST = ("dee", ["flux-dod-analysts"])
VIEWER = ("val", ["flux-viewers"])
OPERATOR = ("ops", ["flux-operators"])


@pytest.fixture
def home(oidc_home: Path) -> Path:
    return oidc_home


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(home, max_bytes=LIMIT)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def meteorites(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A realistic meteorites delivery (CSV, a few planted defects) from the demo generator."""
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.demo.generator import generate_rows, write_delivery

    contract = load_registry().contract_for("meteorites", dt.date.fromisoformat(DAY))
    delivery = generate_rows(contract, 40, seed=7, defect_rate=0.1)
    path = tmp_path_factory.mktemp("src") / "meteorites.csv"
    write_delivery(delivery.frame, path, "csv")
    return path.read_bytes()


def bearer(source: Issuer, who: tuple[str, list[str]], **claims: Any) -> dict[str, str]:
    sub, groups = who
    return {"Authorization": f"Bearer {source.token(sub, groups, **claims)}"}


def put(
    client: TestClient,
    issuer: Issuer,
    who: tuple[str, list[str]],
    content: Any,
    *,
    dataset: str = "meteorites",
    day: str = DAY,
    name: str = "meteorites.csv",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    url = f"/v1/deliveries/{dataset}/{day}/{name}"
    sent = {"Content-Type": "text/csv", **bearer(issuer, who), **(headers or {})}
    return client.put(url, content=content, headers=sent, **kwargs)


def files_under(root: Path) -> list[Path]:
    """Every file (hidden ones included) below ``root``."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def landed(home: Path) -> list[Path]:
    return files_under(home / "landing")


def access_records(home: Path) -> list[dict[str, Any]]:
    return [e.to_dict() for e in AuditTrail(home).iter_records(kind="access")]


def assert_json_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"} and body["message"], body
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"] == code, body
    return body


# --- the happy path -------------------------------------------------------------------------


def test_healthz_answers_without_a_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_upload_lands_atomically_in_the_tokens_agency_and_is_audited(
    client: TestClient, issuer: Issuer, home: Path, meteorites: bytes
) -> None:
    response = put(client, issuer, NASA_SUBMITTER, meteorites)
    assert response.status_code == 201, response.text
    body = response.json()
    target = home / "landing" / "nasa" / "meteorites" / DAY / "meteorites.csv"
    assert landed(home) == [target]  # no staged part or other leftover beside it
    assert target.read_bytes() == meteorites
    assert body["sha256"] == hashlib.sha256(meteorites).hexdigest()
    assert (body["size"], body["agency"], body["status"]) == (len(meteorites), "nasa", "landed")
    assert response.headers["location"] == f"/v1/deliveries/{body['id']}"

    receipt = json.loads((home / "state" / "intake" / f"{body['id']}.json").read_text())
    assert (receipt["agency"], receipt["file"], receipt["sha256"]) == (
        "nasa", "meteorites.csv", body["sha256"],
    )  # fmt: skip
    assert receipt["who"]["subject"] == "ada" and receipt["who"]["role"] == "agency_submitter"

    status = client.get(body["status_url"], headers=bearer(issuer, NASA_SUBMITTER))
    assert status.status_code == 200 and status.json()["status"] == "landed"
    [upload, read] = access_records(home)
    assert upload["payload"]["identity"]["subject"] == "ada"
    assert (upload["payload"]["action"], upload["payload"]["outcome"]) == ("submit", "allowed")
    assert (upload["agency"], upload["dataset"], upload["day"]) == ("nasa", "meteorites", DAY)
    assert upload["payload"]["sha256"] == body["sha256"]
    assert (read["payload"]["action"], read["payload"]["outcome"]) == ("read_status", "allowed")


def test_after_a_real_load_status_has_counts_and_reports_download(
    client: TestClient, issuer: Issuer, home: Path, meteorites: bytes
) -> None:
    from flux_pipelines_tests.conftest import materialize

    delivery = put(client, issuer, NASA_SUBMITTER, meteorites).json()
    assert materialize(home, [("nasa", "meteorites")], DAY).success

    me = bearer(issuer, NASA_SUBMITTER)
    status = client.get(f"/v1/deliveries/{delivery['id']}", headers=me).json()
    assert status["status"] == "loaded"
    counts = status["counts"]
    assert counts["rows_read"] == 40
    assert counts["rows_curated"] + counts["rows_quarantined"] == 40
    assert counts["rows_quarantined"] > 0  # the generator planted fatal defects
    assert status["report"]["errors"] >= counts["rows_quarantined"]

    report = client.get(f"/v1/deliveries/{delivery['id']}/report", headers=me)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    assert "Rule Message" in report.text.splitlines()[0]  # the Broker's columns
    assert len(report.text.strip().splitlines()) - 1 == status["report"]["errors"]
    warnings = client.get(f"/v1/deliveries/{delivery['id']}/report?kind=warnings", headers=me)
    assert warnings.status_code == 200
    linked = client.get(f"/v1/deliveries/{delivery['id']}/warning_report.csv", headers=me)
    assert linked.content == warnings.content  # the summary page's relative link
    summary = client.get(f"/v1/deliveries/{delivery['id']}/summary", headers=me)
    assert summary.status_code == 200 and "<html" in summary.text.lower()
    assert "default-src 'none'" in summary.headers["content-security-policy"]

    # nasa's analyst reads the day's published rows; dod's analyst is told nothing is there
    rows = client.get(f"/v1/published/nasa/meteorites/{DAY}", headers=bearer(issuer, NASA_ANALYST))
    assert rows.status_code == 200, rows.text
    published = rows.json()
    assert (published["agency"], published["day"]) == ("nasa", DAY)
    assert len(published["rows"]) == counts["rows_curated"]
    parquet = client.get(
        f"/v1/published/nasa/meteorites/{DAY}",
        headers={**bearer(issuer, NASA_ANALYST), "Accept": "application/vnd.apache.parquet"},
    )
    assert parquet.content[:4] == b"PAR1"
    operator = client.get(f"/v1/published/nasa/meteorites/{DAY}", headers=bearer(issuer, OPERATOR))
    assert len(operator.json()["rows"]) == counts["rows_curated"]
    absent = client.get(
        "/v1/published/nasa/meteorites/2026-01-07", headers=bearer(issuer, NASA_ANALYST)
    )
    assert (
        absent.json()
        == client.get(
            f"/v1/published/nasa/meteorites/{DAY}", headers=bearer(issuer, DOD_ANALYST)
        ).json()
    )  # a day not published reads exactly like another agency's day
    for who in (DOD_ANALYST, DOD_SUBMITTER):
        other = client.get(f"/v1/published/nasa/meteorites/{DAY}", headers=bearer(issuer, who))
        assert_json_error(other, 404 if who == DOD_ANALYST else 403)
        assert "meteorite" not in other.text.lower().replace("meteorites/", "")
    for path in ("", "/report", "/summary"):
        other = client.get(
            f"/v1/deliveries/{delivery['id']}{path}", headers=bearer(issuer, DOD_SUBMITTER)
        )
        assert_json_error(other, 404, "not_found")
        assert (
            other.json()
            == client.get(
                f"/v1/deliveries/{'0' * 32}{path}", headers=bearer(issuer, DOD_SUBMITTER)
            ).json()
        )  # another agency's delivery reads exactly like one that does not exist

    denied = [r for r in access_records(home) if r["payload"]["outcome"] == "denied"]
    assert {r["payload"]["identity"]["subject"] for r in denied} == {"dee", "dan"}
    assert {r["payload"]["action"] for r in denied} >= {
        "read_published", "read_status", "read_report", "read_summary",
    }  # fmt: skip


def test_delivery_status_and_reports_need_no_warehouse(
    client: TestClient, issuer: Issuer, home: Path, meteorites: bytes
) -> None:
    """What the deployments mount for the intake (receipts/, outbox/, the trail; never
    warehouse/) is all it reads: with warehouse/ gone, a loaded delivery still shows."""
    import shutil

    from flux_pipelines_tests.conftest import materialize

    delivery = put(client, issuer, NASA_SUBMITTER, meteorites).json()
    assert materialize(home, [("nasa", "meteorites")], DAY).success
    me = bearer(issuer, NASA_SUBMITTER)
    with_warehouse = client.get(f"/v1/deliveries/{delivery['id']}", headers=me).json()
    shutil.move(home / "warehouse", home.parent / f"{home.name}-warehouse-elsewhere")
    without = client.get(f"/v1/deliveries/{delivery['id']}", headers=me).json()
    assert without == with_warehouse and without["status"] == "loaded"
    assert without["counts"]["rows_read"] == 40
    report = client.get(f"/v1/deliveries/{delivery['id']}/report", headers=me)
    assert report.status_code == 200 and "Rule Message" in report.text


def test_a_report_is_not_served_before_the_delivery_is_loaded(
    client: TestClient, issuer: Issuer, meteorites: bytes
) -> None:
    delivery = put(client, issuer, NASA_SUBMITTER, meteorites).json()
    response = client.get(
        f"/v1/deliveries/{delivery['id']}/report", headers=bearer(issuer, NASA_SUBMITTER)
    )
    assert_json_error(response, 409, "not_loaded")


# --- hostile names, sizes and types ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("..%2F..%2Fetc%2Fpasswd", 400),
        ("a%2F..%2F..%2Fb.csv", 400),
        ("%2Fetc%2Fcron.d%2Fx.csv", 400),  # absolute
        ("..%5C..%5Cb.csv", 400),  # backslash
        ("a%00.csv", 400),  # NUL
        (".hidden.csv", 400),
        ("x.csv.part", 400),  # the sensor would ignore it
        ("manifest.json", 400),
        ("_SUCCESS", 400),
        ("%E2%80%AEvsc.exe.csv", 400),  # a right-to-left override hiding the real name
        ("*.csv", 400),
        ("a" * 250 + ".csv", 400),
        ("payload.exe", 415),
        ("data.csv.gz", 415),
    ],
)
def test_hostile_file_names_are_refused_and_nothing_lands(
    client: TestClient, issuer: Issuer, home: Path, name: str, status: int
) -> None:
    response = put(client, issuer, NASA_SUBMITTER, b"id\n1\n", name=name)
    assert_json_error(response, status)
    assert landed(home) == []
    assert not (home.parent / "etc").exists() and not (home / "etc").exists()
    [record] = access_records(home)
    assert record["payload"]["outcome"] == "refused" and record["payload"]["status"] == status


@pytest.mark.parametrize("name", ["a.csv\n", "a\r.csv", "a\t.csv", "\u202ecsv.exe"])
def test_control_characters_never_reach_a_file_name(name: str) -> None:
    with pytest.raises(IntakeRefused) as refused:
        check_name(name)
    assert refused.value.status == 400
    with pytest.raises(IntakeRefused):
        check_day(f"{DAY}\n", None)


def test_a_body_over_the_limit_is_refused_and_nothing_lands(
    client: TestClient, issuer: Issuer, home: Path
) -> None:
    declared = put(client, issuer, NASA_SUBMITTER, b"x" * (LIMIT + 1))
    assert_json_error(declared, 413, "too_large")

    def streamed() -> Iterator[bytes]:  # no Content-Length: the limit is met while reading
        for _ in range(3):
            yield b"y" * WRITE_BLOCK

    chunked = put(client, issuer, NASA_SUBMITTER, streamed())
    assert_json_error(chunked, 413, "too_large")
    assert landed(home) == []  # a body cut mid-stream after a written block: the socket test


def test_an_upload_at_the_limit_is_accepted(client: TestClient, issuer: Issuer, home: Path) -> None:
    body = b"id\n" + b"1\n" * ((LIMIT - 3) // 2)
    assert put(client, issuer, NASA_SUBMITTER, body).status_code == 201
    assert landed(home)[0].stat().st_size == len(body)


def test_a_link_planted_in_the_landing_zone_is_never_written_through(
    client: TestClient, issuer: Issuer, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (home / "landing" / "nasa").mkdir(parents=True)
    (home / "landing" / "nasa" / "meteorites").symlink_to(elsewhere, target_is_directory=True)
    response = put(client, issuer, NASA_SUBMITTER, b"id\n1\n")
    body = assert_json_error(response, 409, "landing_unsafe")
    assert "delivery.symlink" in body["message"] and str(elsewhere) not in body["message"]
    assert files_under(elsewhere) == [] and list(elsewhere.iterdir()) == []
    [record] = access_records(home)
    assert (record["payload"]["outcome"], record["payload"]["status"]) == ("refused", 409)


def test_a_folder_under_the_target_name_refuses_the_upload_and_leaves_nothing(
    client: TestClient, issuer: Issuer, home: Path
) -> None:
    day = home / "landing" / "nasa" / "meteorites" / DAY
    (day / "meteorites.csv").mkdir(parents=True)
    assert_json_error(put(client, issuer, NASA_SUBMITTER, b"id\n1\n"), 409, "name_taken")
    assert landed(home) == [] and [p.name for p in day.iterdir()] == ["meteorites.csv"]
    assert files_under(home / "state" / "intake") == []  # no receipt of a delivery that failed
    outcomes = [r["payload"]["outcome"] for r in access_records(home)]
    assert outcomes == ["allowed", "failed"]  # the trail does not claim it landed


@pytest.mark.parametrize(
    ("name", "content_type", "content", "code"),
    [
        ("a.csv", "text/html", b"id\n1\n", "unsupported_type"),
        ("a.csv", "application/x-www-form-urlencoded", b"agency=dod", "unsupported_type"),
        ("a.csv", "application/gzip", gzip.compress(b"id\n1\n", mtime=0), "unsupported_type"),
        (
            "a.csv",
            "text/csv",
            gzip.compress(b"id\n1\n", mtime=0),
            "content_mismatch",
        ),  # bytes decide
        ("a.parquet", "application/octet-stream", b"id\n1\n", "content_mismatch"),
        ("a.json", "application/json", b"PK\x03\x04zip", "content_mismatch"),
    ],
)
def test_content_is_checked_by_declared_type_and_by_bytes(
    client: TestClient,
    issuer: Issuer,
    home: Path,
    name: str,
    content_type: str,
    content: bytes,
    code: str,
) -> None:
    response = put(
        client, issuer, NASA_SUBMITTER, content, name=name, headers={"Content-Type": content_type}
    )
    assert_json_error(response, 415, code)
    assert landed(home) == []


@pytest.mark.parametrize(
    ("dataset", "day", "status"),
    [
        ("no_such_dataset", DAY, 404),
        ("constituents", DAY, 404),  # a dataset others deliver, but not nasa
        ("meteorites", "2026-02-30", 422),
        ("meteorites", "20260105", 422),
        ("meteorites", f"{DAY}%0A", 422),
        ("meteorites", "2025-12-31", 422),  # before nasa was onboarded
        ("meteorites", "2999-01-01", 422),  # further ahead than tomorrow
    ],
)
def test_unknown_datasets_and_invalid_days_are_refused(
    client: TestClient, issuer: Issuer, home: Path, dataset: str, day: str, status: int
) -> None:
    response = put(client, issuer, NASA_SUBMITTER, b"id\n1\n", dataset=dataset, day=day)
    assert_json_error(response, status)
    assert landed(home) == []


# --- identity: the agency comes from the token only ------------------------------------------


def test_another_agency_named_in_the_request_is_refused_and_lands_nowhere(
    client: TestClient, issuer: Issuer, home: Path, meteorites: bytes
) -> None:
    query = client.put(
        f"/v1/deliveries/contract_transactions/{DAY}/t.csv?agency=dod",
        content=b"id\n1\n",
        headers={"Content-Type": "text/csv", **bearer(issuer, NASA_SUBMITTER)},
    )
    assert_json_error(query, 403, "forbidden")
    header = put(client, issuer, NASA_SUBMITTER, meteorites, headers={"X-Flux-Agency": "dod"})
    assert_json_error(header, 403, "forbidden")
    form = client.put(
        f"/v1/deliveries/meteorites/{DAY}/meteorites.csv",
        data={"agency": "dod"},
        files={"file": ("meteorites.csv", meteorites, "text/csv")},
        headers=bearer(issuer, NASA_SUBMITTER),
    )
    assert_json_error(form, 415)  # the body is the file itself, never a form naming anything
    # dod's submitter cannot deliver nasa's dataset: dod does not deliver it
    other = put(client, issuer, DOD_SUBMITTER, meteorites)
    assert_json_error(other, 404, "unknown_dataset")
    assert landed(home) == []
    outcomes = [(r["payload"]["outcome"], r["agency"]) for r in access_records(home)]
    assert outcomes[:2] == [("denied", "nasa"), ("denied", "nasa")]


EVIL_ISSUER = "https://evil.example/realms/flux"
UPLOAD_ROUTE = "PUT /v1/deliveries/{dataset}/{day}/{filename:path}"


@pytest.mark.parametrize(
    ("token_kwargs", "match", "reason"),
    [
        ({"lifetime": -120}, "expired", "expired"),
        (
            {"key": rsa.generate_private_key(public_exponent=65537, key_size=2048)},
            "not valid",
            "bad_signature",
        ),
        ({"audience": "another-app"}, "not for Flux", "wrong_audience"),
        ({"issuer": EVIL_ISSUER}, "not issued by", "wrong_issuer"),
    ],
)
def test_expired_forged_and_foreign_tokens_get_401_and_are_audited_unverified(
    client: TestClient,
    issuer: Issuer,
    home: Path,
    meteorites: bytes,
    token_kwargs: dict,
    match: str,
    reason: str,
) -> None:
    from flux_pipelines.access.audit import last_seen

    headers = {"Content-Type": "text/csv", **bearer(issuer, NASA_SUBMITTER, **token_kwargs)}
    response = client.put(
        f"/v1/deliveries/meteorites/{DAY}/meteorites.csv", content=meteorites, headers=headers
    )
    body = assert_json_error(response, 401, "unauthenticated")
    assert match in body["message"]
    assert response.headers["www-authenticate"].startswith('Bearer realm="flux", error=')
    assert landed(home) == []
    # the attempt is in the trail, naming nobody: what the token claimed is labelled unverified
    [record] = access_records(home)
    payload = record["payload"]
    assert payload["identity"] == {
        "verified": False, "subject": None, "email": None, "role": None, "agency": None,
    }  # fmt: skip
    assert (payload["action"], payload["outcome"], payload["reason"]) == (
        "authenticate", "denied", reason,
    )  # fmt: skip
    assert payload["unverified_subject"] == NASA_SUBMITTER[0]
    claimed_issuer = token_kwargs.get("issuer", "https://login.test/realms/flux")
    assert payload["unverified_issuer"] == claimed_issuer
    assert (payload["client"], payload["endpoint"]) == ("testclient", UPLOAD_ROUTE)
    assert (payload["attempts"], payload["aggregated"]) == (1, False)
    assert (record["agency"], record["dataset"], record["day"]) == (None, None, None)
    assert last_seen(home).subjects == {}  # a forged "ada" gave ada no role history


@pytest.mark.parametrize("authorization", [None, "", "Basic YWRhOnB3", "Bearer ", "Bearer a.b.c"])
def test_missing_or_malformed_tokens_get_401(
    client: TestClient, home: Path, authorization: str | None
) -> None:
    headers = {"Content-Type": "text/csv"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = client.put(
        f"/v1/deliveries/meteorites/{DAY}/m.csv", content=b"id\n", headers=headers
    )
    assert_json_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.get(f"/v1/deliveries/{'0' * 32}").status_code == 401
    assert landed(home) == []
    # no bearer token presented: nothing to audit; a token that is no JWT: one attempt
    reasons = [r["payload"]["reason"] for r in access_records(home)]
    assert reasons == (["malformed"] if authorization == "Bearer a.b.c" else [])


@pytest.mark.parametrize("who", [VIEWER, NASA_ANALYST, OPERATOR])
def test_only_an_agency_submitter_uploads(
    client: TestClient, issuer: Issuer, home: Path, meteorites: bytes, who: tuple[str, list[str]]
) -> None:
    response = put(client, issuer, who, meteorites)
    assert_json_error(response, 403, "forbidden")
    assert landed(home) == []
    [record] = access_records(home)
    assert record["payload"]["identity"]["subject"] == who[0]
    assert record["payload"]["outcome"] == "denied"


def test_a_viewer_reads_no_status_and_no_published_rows(client: TestClient, issuer: Issuer) -> None:
    assert_json_error(client.get(f"/v1/deliveries/{'0' * 32}", headers=bearer(issuer, VIEWER)), 403)
    published = client.get(f"/v1/published/nasa/meteorites/{DAY}", headers=bearer(issuer, VIEWER))
    assert_json_error(published, 403)


# --- pre-validation ---------------------------------------------------------------------------


def test_validation_gives_the_verdict_without_landing(
    client: TestClient, issuer: Issuer, home: Path, meteorites: bytes
) -> None:
    url = f"/v1/validate/meteorites/{DAY}/meteorites.csv?show=3"
    headers = {"Content-Type": "text/csv", **bearer(issuer, NASA_SUBMITTER)}
    verdict = client.post(url, content=meteorites, headers=headers)
    assert verdict.status_code == 200, verdict.text
    doc = verdict.json()
    assert (doc["exit_code"], doc["verdict"], doc["agency"]) == (1, "quarantined", "nasa")
    assert doc["rows"]["in"] == 40 and doc["rows"]["would_quarantine"] > 0
    assert len(doc["violations"]) == 3 and doc["violations_total"] >= 3
    assert doc["files"][0]["sha256"] == hashlib.sha256(meteorites).hexdigest()

    rejected = client.post(
        f"/v1/validate/meteorites/{DAY}/other.csv", content=b"colour,size\nred,1\n", headers=headers
    ).json()
    assert (rejected["exit_code"], rejected["verdict"]) == (2, "rejected")
    assert rejected["files"][0]["reason"]

    assert landed(home) == []
    assert files_under(home / "state" / "intake" / "scratch") == []
    actions = [(r["payload"]["action"], r["payload"]["outcome"]) for r in access_records(home)]
    assert actions == [("validate", "allowed")] * 2
    forbidden = client.post(url, content=meteorites, headers={**headers, **bearer(issuer, VIEWER)})
    assert_json_error(forbidden, 403)


# --- through a real socket --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_healthy(port: int, server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"flux serve exited: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("flux serve did not answer /healthz in time")


def test_flux_serve_lands_a_streamed_upload_through_a_socket(
    home: Path, issuer: Issuer, meteorites: bytes
) -> None:
    port = _free_port()
    env = {**os.environ, **issuer.env(), "FLUX_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "flux_pipelines.cli.main", "serve", "--home", str(home),
         "--port", str(port), "--max-bytes", str(LIMIT)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_healthy(port, server)
        token = bearer(issuer, NASA_SUBMITTER)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        # a raw path: no client normalises the '..' away before the server sees it
        conn.request(
            "PUT", f"/v1/deliveries/meteorites/{DAY}/a/../../b.csv", body=b"id\n1\n",
            headers={**token, "Content-Type": "text/csv"},
        )  # fmt: skip
        refused = conn.getresponse()
        assert refused.status == 400 and json.loads(refused.read())["error"] == "bad_file_name"

        def chunks() -> Iterator[bytes]:  # sent with chunked transfer encoding
            for start in range(0, len(meteorites), 1000):
                yield meteorites[start : start + 1000]

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "PUT", f"/v1/deliveries/meteorites/{DAY}/meteorites.csv", body=chunks(),
            headers={**token, "Content-Type": "text/csv"}, encode_chunked=True,
        )  # fmt: skip
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 201, body
        target = home / "landing" / "nasa" / "meteorites" / DAY / "meteorites.csv"
        assert target.read_bytes() == meteorites
        assert body["sha256"] == hashlib.sha256(meteorites).hexdigest()
        assert landed(home) == [target]

        # Over the limit mid-stream: a first block was written to the staged part, which
        # must be gone with the refusal (the day folder it was written into stays, empty).
        def too_much() -> Iterator[bytes]:
            for _ in range(LIMIT // 65536):
                yield b"1\n" * 32768
            yield b"1"

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "PUT", f"/v1/deliveries/meteorites/{NEXT_DAY}/big.csv", body=too_much(),
            headers={**token, "Content-Type": "text/csv"}, encode_chunked=True,
        )  # fmt: skip
        over = conn.getresponse()
        assert over.status == 413 and json.loads(over.read())["error"] == "too_large"
        assert (home / "landing" / "nasa" / "meteorites" / NEXT_DAY).is_dir()
        assert landed(home) == [target]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_published_reads_follow_the_personal_data_entitlement(
    client: TestClient, issuer: Issuer, home: Path
) -> None:
    """The same read returns personal columns hashed to a plain analyst and in clear to the
    agency's personal-data group and operators; every other value is identical."""
    from flux_pipelines_tests.conftest import deliver, materialize

    day = "2026-01-09"  # meteorites 2.0.0: observed_by is personal data
    deliver(home, "nasa", "meteorites", day, 60, seed=5)
    assert materialize(home, [("nasa", "meteorites")], day).success
    url = f"/v1/published/nasa/meteorites/{day}"

    def rows(who: tuple[str, list[str]]) -> dict[int, dict[str, Any]]:
        reply = client.get(url, headers=bearer(issuer, who))
        assert reply.status_code == 200, reply.text
        return {r["_row_number"]: r for r in reply.json()["rows"]}

    plain, entitled, operator = rows(NASA_ANALYST), rows(NASA_PERSONAL), rows(OPERATOR)
    assert entitled == operator and plain.keys() == entitled.keys()
    observed = [n for n, r in entitled.items() if r["observed_by"] is not None]
    assert observed, "the day has observers to mask"
    for n in observed:
        hashed = plain[n]["observed_by"]
        assert len(hashed) == 64 and hashed != entitled[n]["observed_by"]
    strip = lambda r: {k: v for k, v in r.items() if k != "observed_by"}  # noqa: E731
    assert {n: strip(r) for n, r in plain.items()} == {n: strip(r) for n, r in entitled.items()}
