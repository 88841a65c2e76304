"""Issue point 5: a head of the audit trail the pipeline host cannot rewrite.

The trail's documented limit is real: whoever can write the trail and both anchors (the
pipeline's own user) can edit an old record and recompute a chain ``verify`` accepts. These
tests do exactly that, with a forger written here from the public format, and show that a
witness holding a key the pipeline host does not have catches it, refuses to sign over it,
and cannot be impersonated. Real files, real Ed25519 signatures; when run as root, real OS
users show the pipeline's user cannot write the witness's store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from flux_pipelines.audit import AuditRecord, AuditTrail
from flux_pipelines.audit.cli import audit_app
from flux_pipelines.audit.witness import STORE_FILE, Statement, keygen, witness
from flux_pipelines.errors import ConfigurationError, WitnessRefused

runner = CliRunner()
GENESIS = "0" * 64


def build(home: Path, n: int, start: int = 0) -> AuditTrail:
    trail = AuditTrail(home)
    for i in range(start, start + n):
        trail.append(AuditRecord("load", {"rows": i}, agency="nasa", dataset="meteorites"))
    return trail


def _hash(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rewrite_history(
    home: Path, seq: int, payload: dict[str, Any], *, keep: int | None = None
) -> None:
    """What the pipeline host's user can do without any secret: edit record ``seq``, recompute
    every hash and link after it, optionally drop records after ``keep``, and rewrite BOTH
    anchors (audit/head.json and state/audit_anchor.json) to the new end."""
    trail_path = home / "audit" / "trail.jsonl"
    records = [json.loads(line) for line in trail_path.read_text(encoding="utf-8").splitlines()]
    if keep is not None:
        records = records[:keep]
    prev = GENESIS
    out = []
    for record in records:
        body = {k: v for k, v in record.items() if k != "hash"}
        if body["seq"] == seq:
            body["payload"] = payload
        body["prev_hash"] = prev
        prev = _hash(body)
        out.append(json.dumps({**body, "hash": prev}, sort_keys=True, separators=(",", ":")))
    trail_path.write_text("".join(line + "\n" for line in out), encoding="utf-8")
    anchor = json.dumps({"seq": records[-1]["seq"], "hash": prev})
    (home / "audit" / "head.json").write_text(anchor, encoding="utf-8")
    (home / "state" / "audit_anchor.json").write_text(anchor, encoding="utf-8")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = keygen(tmp_path / "witness-keys")
    return private, public


def verify_cli(home: Path, store: Path | None = None, public: Path | None = None) -> Any:
    args = ["verify", "--home", str(home)]
    if store is not None and public is not None:
        args += ["--witness", str(store), "--witness-public-key", str(public)]
    return runner.invoke(audit_app, args)


def witness_cli(home: Path, store: Path, private: Path) -> Any:
    args = ["witness", "--home", str(home), "--store", str(store), "--key", str(private)]
    return runner.invoke(audit_app, args)


def test_keygen_keeps_the_private_key_private_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "k"
    result = runner.invoke(audit_app, ["witness-keygen", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "witness.key").stat().st_mode & 0o777 == 0o600
    assert (out / "witness.pub").stat().st_mode & 0o777 == 0o644
    again = runner.invoke(audit_app, ["witness-keygen", "--out", str(out)])
    assert again.exit_code == 2 and "never overwritten" in again.output
    build(tmp_path / "home", 2)
    (out / "witness.key").chmod(0o640)  # a key others may read is no secret any more
    with pytest.raises(ConfigurationError, match="group or others may access it"):
        witness(tmp_path / "home", tmp_path / "store", out / "witness.key")


@pytest.mark.parametrize(
    ("edit_seq", "rewritten", "intact"),
    [(3, [10, 15], None), (12, [15], 10)],
    ids=["before-both-statements", "between-statements"],
)
def test_a_full_rewrite_passes_plain_verify_but_not_the_witness(
    tmp_path: Path, keys: tuple[Path, Path], edit_seq: int, rewritten: list[int], intact: int
) -> None:
    private, public = keys
    home, store = tmp_path / "home", tmp_path / "store"
    build(home, 10)
    first = witness(home, store, private)
    build(home, 5, start=10)
    second = witness(home, store, private)
    assert (first.seq, second.seq) == (10, 15)
    assert verify_cli(home, store, public).exit_code == 0

    rewrite_history(home, edit_seq, {"rows": 0, "note": "nothing to see"})

    # the documented limit: the chain and both anchors agree, so plain verify passes
    assert AuditTrail(home).verify().ok
    plain = verify_cli(home)
    assert plain.exit_code == 0 and ": OK" in plain.output
    # the witness's signed heads do not
    result = verify_cli(home, store, public)
    assert result.exit_code == 1, result.output
    when = {10: first.ts, 15: second.ts}
    for seq in rewritten:
        assert f"seq {seq}: history rewritten after it was witnessed at {when[seq]}" in (
            result.output
        )
    if intact is not None:
        assert f"seq {intact} was still intact, so the change lies in seq 11-15" in result.output
    else:
        assert "seq 10: history" in result.output


def test_a_rewrite_that_also_cuts_the_tail_is_named_as_cut(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    home, store = tmp_path / "home", tmp_path / "store"
    build(home, 8)
    witness(home, store, private)
    rewrite_history(home, 2, {"rows": -1}, keep=5)  # re-anchored at seq 5: plain verify is fine
    assert verify_cli(home).exit_code == 0
    result = verify_cli(home, store, public)
    assert result.exit_code == 1
    assert "truncated: seq 8, witnessed at" in result.output and "records were cut" in result.output
    shutil.rmtree(home)  # the whole home gone: plain verify has nothing to say, the witness does
    assert verify_cli(home).exit_code == 2
    gone = verify_cli(home, store, public)
    assert gone.exit_code == 1 and "truncated: seq 8" in gone.output


def _forged_line(body: dict[str, Any], key: Ed25519PrivateKey) -> str:
    import base64

    statement = Statement(**body)
    sig = base64.b64encode(key.sign(statement.signed_bytes())).decode()
    return json.dumps({"statement": body, "signature": sig}, sort_keys=True) + "\n"


@pytest.mark.parametrize("attack", ["foreign-key", "edited-hash", "removed-statement"])
def test_a_forged_or_altered_witness_statement_is_detected(
    tmp_path: Path, keys: tuple[Path, Path], attack: str
) -> None:
    private, public = keys
    home, store = tmp_path / "home", tmp_path / "store"
    build(home, 4)
    witness(home, store, private)
    build(home, 2, start=4)
    witness(home, store, private)
    build(home, 1, start=6)
    witness(home, store, private)
    path = store / STORE_FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    last = json.loads(lines[-1])["statement"]
    if attack == "foreign-key":
        # the forger rewrites history, then signs the new head with a key of their own
        rewrite_history(home, 2, {"rows": 99})
        trail = AuditTrail(home)
        head = trail.read_anchor()
        assert head is not None
        body = {**last, "seq": head.seq, "hash": head.hash, "ts": "2099-01-01T00:00:00Z"}
        body["prev_statement_hash"] = Statement(**last).digest()
        path.write_text("".join(lines) + _forged_line(body, Ed25519PrivateKey.generate()))
        expected = "forged: line 4 (seq 7"
    elif attack == "edited-hash":
        obj = json.loads(lines[1])
        obj["statement"]["hash"] = "f" * 64
        lines[1] = json.dumps(obj) + "\n"
        path.write_text("".join(lines))
        expected = "forged: line 2 (seq 6"
    else:
        path.write_text(lines[0] + lines[2])
        expected = "broken: line 2 (seq 7"
    result = verify_cli(home, store, public)
    assert result.exit_code == 1, result.output
    assert expected in result.output
    with pytest.raises(WitnessRefused, match="its own store was altered"):
        witness(home, store, private)


def test_appending_after_witnessing_keeps_verify_green(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    home, store = tmp_path / "home", tmp_path / "store"
    build(home, 3)
    assert witness_cli(home, store, private).exit_code == 0
    build(home, 4, start=3)
    result = verify_cli(home, store, public)
    assert result.exit_code == 0, result.output
    assert "last witnessed seq 3" in result.output and "seq 4-7 are not witnessed yet" in (
        result.output
    )
    signed = witness_cli(home, store, private)
    assert signed.exit_code == 0 and "witnessed seq 7" in signed.output
    assert verify_cli(home, store, public).exit_code == 0
    assert len((store / STORE_FILE).read_text().splitlines()) == 2


def test_the_witness_refuses_to_sign_over_a_rewritten_history(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, _ = keys
    home, store = tmp_path / "home", tmp_path / "store"
    build(home, 6)
    first = witness(home, store, private)
    build(home, 2, start=6)
    rewrite_history(home, 4, {"rows": 0})
    before = (store / STORE_FILE).read_bytes()
    result = witness_cli(home, store, private)
    assert result.exit_code == 1, result.output
    assert "refused" in result.output
    assert f"seq 6: history rewritten after it was witnessed at {first.ts}" in result.output
    assert (store / STORE_FILE).read_bytes() == before  # nothing signed
    rewrite_history(home, 4, {"rows": 3}, keep=5)  # and a cut below the witnessed seq
    cut = witness_cli(home, store, private)
    assert cut.exit_code == 1 and "records were cut" in cut.output


# --- real OS users: the pipeline's user cannot write the witness's store --------------------


@pytest.fixture
def os_users() -> Iterator[tuple[str, str]]:
    """A pipeline user and a witness user, created for the test and removed after it."""
    if os.geteuid() != 0:
        reason = "creating OS users needs root; run as root (or in CI) to show the store's "
        "permissions hold against the pipeline's real user"
        if os.environ.get("CI"):
            pytest.fail(f"in CI this test must run, not skip: {reason}")
        pytest.skip(reason)
    suffix = uuid.uuid4().hex[:8]
    users = (f"fluxpipe{suffix}", f"fluxwit{suffix}")
    created: list[str] = []
    try:
        for user in users:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                check=True,
                capture_output=True,
            )
            created.append(user)
        yield users
    finally:
        for user in created:
            subprocess.run(["userdel", user], check=False, capture_output=True)


def _as(user: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_pipeline_user_cannot_write_the_witness_store(
    os_users: tuple[str, str], keys: tuple[Path, Path]
) -> None:
    pipeline, witness_user = os_users
    private, public = keys
    base = Path(tempfile.mkdtemp(prefix="flux-witness-"))  # pytest's tmp is 0700 to others
    try:
        base.chmod(0o755)
        home, store = base / "home", base / "store"
        build(home, 5)
        witness(home, store, private)  # the venv is root's: sign here, then hand the store over
        shutil.chown(store, witness_user, witness_user)
        for item in store.iterdir():
            shutil.chown(item, witness_user, witness_user)
        store.chmod(0o755)
        (store / STORE_FILE).chmod(0o644)
        subprocess.run(["chown", "-R", f"{pipeline}:{pipeline}", str(home)], check=True)
        statements = store / STORE_FILE
        before = statements.read_bytes()

        # the pipeline's user owns the home: it can rewrite the trail (the documented limit)...
        assert _as(pipeline, f"printf '' >> {home}/audit/trail.jsonl").returncode == 0
        # ... and read the witness's statements (to verify), but not change them in any way
        assert _as(pipeline, f"cat {statements}").stdout.encode() == before
        attempts = {
            "append": f"printf 'x\\n' >> {statements}",
            "overwrite": f": > {statements}",
            "replace": f"cp {statements} {store}/new && mv {store}/new {statements}",
            "delete": f"rm -f {statements}",
            "chmod": f"chmod 666 {statements}",
            "new file": f"touch {store}/witness.jsonl.2",
        }
        for name, script in attempts.items():
            done = _as(pipeline, script)
            assert done.returncode != 0, f"{name} succeeded as {pipeline}"
            assert "Permission denied" in done.stderr or "Operation not permitted" in done.stderr
        assert statements.read_bytes() == before
        # the witness user can (its store is its own)
        assert _as(witness_user, f"printf '' >> {statements}").returncode == 0

        rewrite_history(home, 2, {"rows": 7})  # what the pipeline's user could write
        result = verify_cli(home, store, public)
        assert result.exit_code == 1 and "seq 5: history rewritten" in result.output
    finally:
        shutil.rmtree(base, ignore_errors=True)
