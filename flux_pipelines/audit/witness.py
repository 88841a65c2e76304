"""A witness of the audit trail's head that the pipeline host cannot rewrite.

The trail's hashes carry no secret (see ``trail``): whoever can write the trail and both
anchors, which the pipeline's own user can, may rewrite history and recompute a valid
chain. A witness closes that gap. It runs as another user or on another host (cron, the
intake service's host), holds an Ed25519 private key the pipeline host never sees, and
appends to its own store, which the pipeline's user can read but not write:

    <store>/witness.jsonl    one signed statement a line: {seq, hash, ts, prev_statement_hash,
                             key_id} and its signature; the statements form a chain of their own
    <store>/witness.lock     flock'd while a statement is signed and appended

Each statement says "at ts the trail's record seq had this hash". A record's hash covers its
``prev_hash``, so it pins every record before it: a history rewritten after a statement
changes the hash at the witnessed seq, and ``check`` names that seq and when it was
witnessed. Before signing, ``witness`` verifies the trail and checks that the record at its
last witnessed seq still has the hash it signed, so it never signs over a rewritten history.

What it does not prove: records appended after the last statement are unwitnessed until the
next run (run it often); whoever holds the witness's key (or the witness user) can sign
anything; a store deleted by its own user loses its statements (keep a copy, or ship the
statements somewhere else too). Signatures are Ed25519 through ``cryptography``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flux_pipelines.audit.trail import GENESIS_HASH, AuditTrail, canonical_json
from flux_pipelines.errors import ConfigurationError, WitnessRefused
from flux_pipelines.locks import exclusive_lock

STORE_FILE = "witness.jsonl"
LOCK_FILE = "witness.lock"
PRIVATE_FILE = "witness.key"
PUBLIC_FILE = "witness.pub"
# Signed bytes start with this, so a signature over a statement is never valid for another
# message the same key might sign (domain separation).
DOMAIN = b"flux-audit-witness-v1\n"
FindingKind = Literal["forged", "broken", "malformed", "rewritten", "truncated", "empty"]


@dataclass(frozen=True)
class Statement:
    """What the witness signs: the trail's head at ``ts``, chained to its previous statement."""

    seq: int
    hash: str
    ts: str
    prev_statement_hash: str
    key_id: str

    def signed_bytes(self) -> bytes:
        return DOMAIN + canonical_json(asdict(self))

    def digest(self) -> str:
        """The next statement's ``prev_statement_hash``."""
        return hashlib.sha256(canonical_json(asdict(self))).hexdigest()


@dataclass(frozen=True)
class Finding:
    """One witness finding: what kind, where (store line, trail seq), in words."""

    kind: FindingKind
    line: int | None
    seq: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class WitnessReport:
    """``check``'s verdict on a trail against a witness store."""

    store: Path
    key_id: str
    statements: list[Statement]
    findings: list[Finding]
    head_seq: int  # the trail's last record when checked

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def last(self) -> Statement | None:
        return self.statements[-1] if self.statements else None


# --- keys ----------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of the public key, to pin it and to name it in findings."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(out: Path) -> tuple[Path, Path, str]:
    """Write a new key pair into ``out``: the private key 0600 (the witness keeps it), the
    public key 0644 (whoever verifies gets it). Refuses to overwrite an existing key."""
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / PRIVATE_FILE, out / PUBLIC_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigurationError(f"{path} exists: a witness key is never overwritten")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # a cron job has nobody to type a passphrase
    )
    public = private.public_key()
    _write_new(private_path, pem, 0o600)
    _write_new(
        public_path,
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    return private_path, public_path, key_id(public)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The witness's key; refused when others may read it (then it is no secret any more)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"witness key {path}: cannot be read ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"witness key {path}: group or others may access it (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}` and consider the key exposed if others could read it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"witness key {path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"witness key {path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"witness public key {path}: cannot be read ({exc})") from exc
    except ValueError as exc:
        raise ConfigurationError(f"witness public key {path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"witness public key {path}: not an Ed25519 key")
    return key


# --- the store -----------------------------------------------------------------------------


def read_statements(store: Path, public: Ed25519PublicKey) -> tuple[list[Statement], list[Finding]]:
    """The store's statements whose signatures verify and that chain, and what else is there.

    A line signed by another key is ``forged``; a valid statement whose
    ``prev_statement_hash`` is not the previous valid statement's digest means statements
    were removed, reordered or inserted (``broken``)."""
    statements: list[Statement] = []
    findings: list[Finding] = []
    path = store / STORE_FILE
    if not path.exists():
        return statements, findings
    prev = GENESIS_HASH
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            parsed = _parse_line(raw)
            if parsed is None:
                findings.append(Finding("malformed", line_no, None, f"line {line_no} is not a "
                                        "signed statement"))  # fmt: skip
                continue
            statement, signature = parsed
            try:
                public.verify(signature, statement.signed_bytes())
            except InvalidSignature:
                findings.append(
                    Finding("forged", line_no, statement.seq,
                            f"line {line_no} (seq {statement.seq}, ts {statement.ts}): its "
                            f"signature does not verify with witness key {key_id(public)}: "
                            "it was not signed by the witness")
                )  # fmt: skip
                continue
            if statement.prev_statement_hash != prev:
                findings.append(
                    Finding("broken", line_no, statement.seq,
                            f"line {line_no} (seq {statement.seq}, ts {statement.ts}) does not "
                            "follow the statement before it: statements were removed, "
                            "reordered or inserted")
                )  # fmt: skip
            statements.append(statement)
            prev = statement.digest()
    return statements, findings


def _parse_line(raw: bytes) -> tuple[Statement, bytes] | None:
    try:
        obj = json.loads(raw)
        body = obj["statement"]
        statement = Statement(
            seq=body["seq"],
            hash=body["hash"],
            ts=body["ts"],
            prev_statement_hash=body["prev_statement_hash"],
            key_id=body["key_id"],
        )
        signature = base64.b64decode(obj["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        return None
    if set(body) != set(asdict(statement)):
        return None
    if not isinstance(statement.seq, int) or isinstance(statement.seq, bool):
        return None
    if not all(isinstance(v, str) for v in (statement.hash, statement.ts, statement.key_id)):
        return None
    return statement, signature


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _hashes_at(trail: AuditTrail, seqs: set[int]) -> tuple[dict[int, set[str]], int]:
    """The stored hashes of the trail's records at ``seqs`` (a set: a duplicated seq is
    verify's finding), and the highest seq in the trail; one streaming pass."""
    found: dict[int, set[str]] = {}
    head = 0
    if trail.exists():
        for entry in trail.iter_records():
            head = max(head, entry.seq)
            if entry.seq in seqs:
                found.setdefault(entry.seq, set()).add(entry.hash)
    return found, head


def _compare(trail: AuditTrail, statements: Iterable[Statement]) -> tuple[list[Finding], int]:
    """Each witnessed seq against the trail: cut, or rewritten (named with when it was
    first witnessed and, when known, the last witnessed seq that is still intact)."""
    first: dict[int, Statement] = {}
    for s in statements:
        first.setdefault(s.seq, s)
    found, head = _hashes_at(trail, set(first) - {0})
    findings: list[Finding] = []
    intact = 0  # the highest witnessed seq found unchanged so far
    for seq in sorted(first):
        s = first[seq]
        if seq == 0:
            continue
        hashes = found.get(seq)
        if hashes is None:
            findings.append(
                Finding("truncated", None, seq, f"seq {seq}, witnessed at {s.ts}, is not in "
                        f"the trail (it ends at seq {head}): records were cut")
            )  # fmt: skip
        elif s.hash not in hashes:
            since = f"; seq {intact} was still intact, so the change lies in seq {intact + 1}-{seq}"
            findings.append(
                Finding("rewritten", None, seq, f"seq {seq}: history rewritten after it was "
                        f"witnessed at {s.ts} (witnessed hash {s.hash[:16]}..., trail now has "
                        f"{sorted(hashes)[0][:16]}...){since if intact else ''}")
            )  # fmt: skip
        else:
            intact = seq
    return findings, head


def check(home: Path, store: Path, public_path: Path) -> WitnessReport:
    """Check the store's signatures and chain, and every witnessed seq against the trail."""
    public = load_public_key(public_path)
    statements, findings = read_statements(store, public)
    if not statements and not findings:
        findings.append(Finding("empty", None, None, f"{store / STORE_FILE} holds no "
                                "statements: nothing was witnessed"))  # fmt: skip
    compared, head = _compare(AuditTrail(home), statements)
    return WitnessReport(store, key_id(public), statements, findings + compared, head)


def witness(home: Path, store: Path, private_path: Path) -> Statement:
    """Sign the trail's current head and append the statement to the store.

    Refuses (``WitnessRefused``, nothing signed) when the store holds statements that do not
    verify, the trail fails verification, or the trail's record at any witnessed seq no
    longer has the hash signed then (history rewritten or cut)."""
    private = load_private_key(private_path)
    public = private.public_key()
    kid = key_id(public)
    with _store_locked(store):
        statements, bad = read_statements(store, public)
        if bad:
            raise WitnessRefused(str(store), f"its own store was altered: {bad[0].message}")
        trail = AuditTrail(home)
        report = trail.verify()
        if not report.ok:
            raise WitnessRefused(
                str(store), f"{trail.path} fails verification: {report.problems[0]}"
            )
        if statements:
            last = statements[-1]
            if report.head_seq < last.seq:
                raise WitnessRefused(
                    str(store),
                    f"the trail ends at seq {report.head_seq} but seq {last.seq} was witnessed "
                    f"at {last.ts}: records were cut",
                )
            rewritten, _ = _compare(trail, [last])
            if rewritten:
                raise WitnessRefused(str(store), rewritten[0].message)
        statement = Statement(
            seq=report.head_seq,
            hash=report.head_hash or GENESIS_HASH,
            ts=_now(),
            prev_statement_hash=statements[-1].digest() if statements else GENESIS_HASH,
            key_id=kid,
        )
        signature = private.sign(statement.signed_bytes())
        line = canonical_json(
            {"statement": asdict(statement), "signature": base64.b64encode(signature).decode()}
        )
        _append(store / STORE_FILE, line + b"\n")
    return statement


# --- files ---------------------------------------------------------------------------------


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: Path, data: bytes) -> None:
    """One write, then fsync: a statement is on disk before the command reports it."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if created:
            os.fchmod(fd, 0o644)  # readable by the pipeline host (to verify), writable by none
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextmanager
def _store_locked(store: Path) -> Iterator[None]:
    """One signer at a time, so two runs cannot both chain to the same statement."""
    if not store.exists():
        store.mkdir(parents=True)
        store.chmod(0o755)  # others read (to verify), only the witness writes
    with exclusive_lock(store / LOCK_FILE, mode=0o644):
        yield
