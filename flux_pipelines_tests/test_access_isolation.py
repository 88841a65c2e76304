"""Read isolation is the storage layer's: real OS users try every read path Flux offers.

A home with two agencies' real loads (nasa, nga) is secured by ``flux access apply``'s
``secure_home``; then real users made with ``useradd`` (nasa's analyst, one with nasa's
personal-data group, nga's analyst, nga's submitter, an outsider) run a probe process whose
credentials are dropped to theirs (``initgroups`` + ``setgid`` + ``setuid``: the kernel, not
Flux, decides). Every denial must be a permission error on the very path tried, never a
missing file, so a test cannot pass by probing the wrong place.

The probe starts as root and drops privileges itself because the venv's interpreter lives
under /root (mode 0700 here): `runuser` could not even exec it. Needs root (CI runs as root);
without it the tests fail under CI and skip elsewhere.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from flux_pipelines.access.permissions import PRIVATE_UMASK, required_groups, secure_home
from flux_pipelines.access.policy import POLICY_FILE, AccessPolicy, load_policy
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import agency_db, agency_receipts

A, B = "nasa", "nga"  # agency A's analyst attacks agency B
A_DATASET, B_DATASET = "meteorites", "constituents"
DAY, DAY2 = "2026-02-03", "2026-02-04"

PROBE = r"""
import json, os, pwd, sys
import duckdb
from flux_pipelines.names import agency_db, agency_receipts

user, attempts = sys.argv[1], json.loads(sys.argv[2])
pw = pwd.getpwnam(user)
os.initgroups(user, pw.pw_gid)  # the user's groups from the group database, as login does
os.setgid(pw.pw_gid)
os.setuid(pw.pw_uid)
try:
    os.setuid(0)
except PermissionError:
    pass
else:
    raise SystemExit("privileges were not dropped")


def attempt(kind, path):
    if kind == "catalog":
        with duckdb.connect(path, read_only=True) as c:
            views = c.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
            return sum(c.execute(f'SELECT count(*) FROM "{v}"').fetchall()[0][0] for (v,) in views)
    if kind == "duckdb_file":
        with duckdb.connect(path, read_only=True) as c:
            return c.execute("SELECT count(*) FROM duckdb_tables()").fetchall()[0][0]
    if kind == "parquet":
        return duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0]
    if kind == "read":
        with open(path, "rb") as handle:
            return len(handle.read())
    if kind == "list":
        return sorted(os.listdir(path))
    if kind == "write":
        with open(os.path.join(path, "planted.csv"), "xb") as handle:
            handle.write(b"id\n1\n")
        return "written"
    raise ValueError(kind)


out = {}
for kind, path in attempts:
    key = f"{kind} {path}"
    try:
        out[key] = ["ok", attempt(kind, path)]
    except PermissionError as exc:  # denied on the path tried, not on something else
        target = path if kind != "write" else os.path.join(path, "planted.csv")
        out[key] = ["denied" if exc.filename == target else "error", str(exc)]
    except duckdb.Error as exc:  # an untraversable folder reads as "No files found" to DuckDB
        why = ("Permission denied", "No files found that match")
        denied = any(w in str(exc) for w in why) and path.split("*")[0] in str(exc)
        out[key] = ["denied" if denied else "error", str(exc)]
    except Exception as exc:
        out[key] = ["error", f"{type(exc).__name__}: {exc}"]
print(json.dumps(out))
"""


@dataclass(frozen=True)
class World:
    """The secured home, its policy and the test users (by role)."""

    home: Path
    policy: AccessPolicy
    policy_file: Path
    users: dict[str, str]  # role -> user name
    rows: dict[str, int]  # what root counts: catalog rows per agency, day-2 rows


def _require_root() -> None:
    """Real users and groups need root: CI must run this component, a laptop may skip it."""
    missing = [t for t in ("useradd", "userdel", "groupadd", "groupdel") if not shutil.which(t)]
    why = "not running as root" if os.geteuid() != 0 else f"{', '.join(missing)} not installed"
    if os.geteuid() == 0 and not missing:
        return
    message = f"read-isolation tests need root and useradd/groupadd to create real users: {why}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; under CI this component cannot be started, so this fails")
    pytest.skip(message)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


def _test_policy(folder: Path, prefix: str) -> Path:
    """The shipped policy with unique group names, so tests never touch real Flux groups."""
    doc = yaml.safe_load(POLICY_FILE.read_text(encoding="utf-8"))
    doc["posix"] = {
        "analysts": f"{prefix}-{{agency}}-an",
        "submitters": f"{prefix}-{{agency}}-sub",
        "report_readers": f"{prefix}-{{agency}}-rep",
        "personal_data": f"{prefix}-{{agency}}-pii",
        "all_analysts": f"{prefix}-all",
    }
    path = folder / "access.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _add_users(prefix: str, policy: AccessPolicy) -> dict[str, str]:
    """One user per role, in the groups provisioning would give them."""
    a, b = policy.posix.for_agency(A), policy.posix.for_agency(B)
    everyone = policy.posix.all_analysts
    roles = {
        "analyst_a": [a.analysts, a.report_readers, everyone],
        "analyst_a_pii": [a.analysts, a.report_readers, everyone, a.personal_data],
        "analyst_b": [b.analysts, b.report_readers, everyone],
        "submitter_b": [b.submitters, b.report_readers],
        "outsider": [],
    }
    users = {}
    for role, groups in roles.items():
        name = f"{prefix}-{role.replace('_', '')}"[:32]
        extra = ["-G", ",".join(groups)] if groups else []
        _run("useradd", "-M", "-N", "-g", prefix, "-s", "/usr/sbin/nologin", *extra, name)
        users[role] = name
    return users


def _remove(prefix: str) -> None:
    for user in pwd.getpwall():
        if user.pw_name.startswith(prefix):
            subprocess.run(["userdel", user.pw_name], capture_output=True, check=False)
    for group in grp.getgrall():
        if group.gr_name.startswith(prefix):
            subprocess.run(["groupdel", group.gr_name], capture_output=True, check=False)


def _build_home(home: Path) -> dict[str, int]:
    """Two agencies' real loads, their catalogs and a cross-agency catalog (as root)."""
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.defs.published.catalogs import write_catalog, write_views
    from flux_pipelines.resources.warehouse import FluxWarehouse
    from flux_pipelines_tests.conftest import deliver, materialize

    deliver(home, A, A_DATASET, DAY, rows=40, seed=1)
    deliver(home, B, B_DATASET, DAY, rows=40, seed=2)
    assert materialize(home, [(A, A_DATASET), (B, B_DATASET)], DAY).success
    registry, warehouse = load_registry(), FluxWarehouse(home=str(home))
    rows = {a: sum(write_catalog(warehouse, registry.agency(a))[1].values()) for a in (A, B)}
    cross = home / "published" / "cross_agency"
    cross.mkdir()
    duckdb.sql(f"COPY (SELECT 1 AS agencies) TO '{cross / 'summary.parquet'}' (FORMAT parquet)")
    write_views(cross)
    return rows


def _load_day_two(home: Path) -> int:
    """A later load, after the home was secured, under the default umask (0022): folder
    modes alone must keep it from other agencies."""
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.defs.published.catalogs import write_catalog
    from flux_pipelines.resources.warehouse import FluxWarehouse
    from flux_pipelines_tests.conftest import deliver, materialize

    previous = os.umask(0o022)
    try:
        deliver(home, A, A_DATASET, DAY2, rows=40, seed=1)
        assert materialize(home, [(A, A_DATASET)], DAY2).success
        write_catalog(FluxWarehouse(home=str(home)), load_registry().agency(A))
        clear = home / "published" / A / "_clear"
        target = clear / f"{A_DATASET}.parquet"
        duckdb.sql(f"COPY (SELECT 'Ada Lovelace' AS name) TO '{target}' (FORMAT parquet)")
    finally:
        os.umask(previous)
    path = home / "published" / A / A_DATASET / f"{DAY2}.parquet"
    return int(duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0])


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    _require_root()
    prefix = f"fxt{secrets.token_hex(3)}"
    scratch = Path(tempfile.mkdtemp(prefix="flux-access-"))
    os.chmod(scratch, 0o711)  # mkdtemp makes it 0700: the test users must traverse it
    try:
        _run("groupadd", prefix)  # the test users' primary group: grants nothing
        policy_file = _test_policy(scratch, prefix)
        policy = load_policy(policy_file)
        home = scratch / "home"
        home.mkdir()
        rows = _build_home(home)
        outcome = secure_home(home, [A, B], create_groups=True, policy=policy)
        assert sorted(outcome.groups_created) == sorted(required_groups(policy.posix, [A, B]))
        assert not outcome.refused, outcome.refused
        users = _add_users(prefix, policy)
        rows["day2"] = _load_day_two(home)
        yield World(home, policy, policy_file, users, rows)
    finally:
        _remove(prefix)
        shutil.rmtree(scratch, ignore_errors=True)


def probe(world: World, role: str, attempts: list[tuple[str, Path | str]]) -> dict[str, list]:
    """Run ``attempts`` as the role's user; ``"<kind> <path>"`` -> [ok|denied|error, detail]."""
    tried = [(kind, str(path)) for kind, path in attempts]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, world.users[role], json.dumps(tried)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _outcomes(results: dict[str, list]) -> dict[str, str]:
    return {attempt: status for attempt, (status, _) in results.items()}


def _b_paths(home: Path) -> list[tuple[str, Path]]:
    """Every read path Flux provides for agency B, and B's private files."""
    pub, out = home / "published", home / "outbox" / B / B_DATASET / DAY
    raw = home / "warehouse" / B / "raw" / B_DATASET / f"_partition_date={DAY}" / "000000.parquet"
    paths = [
        ("catalog", pub / B / "catalog.duckdb"),
        ("parquet", pub / B / B_DATASET / f"{DAY}.parquet"),
        ("read", pub / B / B_DATASET / f"{DAY}.parquet"),
        ("parquet", pub / B / "_scorecard" / B_DATASET / f"{DAY}.parquet"),
        ("list", pub / B),
        ("read", out / "error_report.csv"),
        ("read", out / "summary.html"),
        ("list", home / "outbox" / B),
        ("duckdb_file", agency_db(home, B)),
        ("parquet", raw),
        ("read", raw),
        ("read", agency_receipts(home, B) / B_DATASET / f"{DAY}.json"),
        ("list", home / "landing" / B),
        ("read", home / "landing" / B / B_DATASET / DAY / f"{B_DATASET}.csv"),
        ("write", home / "landing" / B / B_DATASET / DAY),
    ]
    for _kind, path in paths:
        assert os.path.lexists(path), f"{path} missing: the attack would prove nothing"
    return paths


def _private_paths(home: Path) -> list[tuple[str, Path]]:
    """What no analyst reads: listings, the audit trail, instance and A's own working file."""
    paths = [
        ("list", home),
        ("list", home / "published"),
        ("list", home / "outbox"),
        ("read", home / "audit" / "trail.jsonl"),
        ("read", home / "state" / "audit_anchor.json"),
        ("list", home / "dagster_home"),
        ("duckdb_file", agency_db(home, A)),
        ("write", home / "landing" / A / A_DATASET / DAY),
        ("write", home / "published" / A),
    ]
    for _kind, path in paths:
        assert path.exists(), f"{path} missing: the attack would prove nothing"
    return paths


def test_analyst_cannot_read_another_agency_by_any_path(world: World) -> None:
    attacks = _b_paths(world.home) + _private_paths(world.home)
    results = probe(world, "analyst_a", attacks)
    assert _outcomes(results) == {f"{k} {p}": "denied" for k, p in attacks}, results
    # a glob over every agency's published copies finds nothing it may read
    glob = str(world.home / "published" / "*" / "*" / "*.parquet")
    [(status, detail)] = probe(world, "analyst_a", [("parquet", glob)]).values()
    assert status != "ok", detail


def test_analyst_reads_own_agency_including_later_loads(world: World) -> None:
    pub, out = world.home / "published" / A, world.home / "outbox" / A / A_DATASET / DAY
    new_day = pub / A_DATASET / f"{DAY2}.parquet"
    # written after `apply` under umask 0022: world-readable bits, yet the setgid folder gave
    # it A's group, and B's analyst cannot reach it (below)
    assert stat.S_IMODE(os.stat(new_day).st_mode) & 0o004
    assert (
        grp.getgrgid(os.stat(new_day).st_gid).gr_name == world.policy.posix.for_agency(A).analysts
    )
    results = probe(
        world,
        "analyst_a",
        [
            ("catalog", pub / "catalog.duckdb"),
            ("parquet", pub / A_DATASET / f"{DAY}.parquet"),
            ("parquet", new_day),
            ("read", out / "error_report.csv"),
            ("catalog", world.home / "published" / "cross_agency" / "catalog.duckdb"),
        ],
    )
    values = [value for status, value in results.values()]
    assert all(status == "ok" for status, _ in results.values()), results
    catalog_rows, day_rows, day2_rows, report_bytes, cross_rows = values
    assert catalog_rows == world.rows[A] + world.rows["day2"]  # the catalog holds both days
    assert day_rows + day2_rows == catalog_rows and report_bytes > 0 and cross_rows == 1
    denied = probe(world, "analyst_b", [("parquet", new_day), ("catalog", pub / "catalog.duckdb")])
    assert {s for s, _ in denied.values()} == {"denied"}, denied


def test_personal_data_needs_the_personal_data_group(world: World) -> None:
    clear = world.home / "published" / A / "_clear" / f"{A_DATASET}.parquet"
    group = grp.getgrgid(os.stat(clear).st_gid).gr_name
    assert group == world.policy.posix.for_agency(A).personal_data  # inherited via setgid
    [(plain, detail)] = probe(world, "analyst_a", [("parquet", clear)]).values()
    assert plain == "denied", detail
    [(entitled, rows)] = probe(world, "analyst_a_pii", [("parquet", clear)]).values()
    assert (entitled, rows) == ("ok", 1)


def test_submitter_reads_reports_only_and_outsider_nothing(world: World) -> None:
    home = world.home
    report = home / "outbox" / B / B_DATASET / DAY / "error_report.csv"
    published = [
        ("catalog", home / "published" / B / "catalog.duckdb"),
        ("catalog", home / "published" / "cross_agency" / "catalog.duckdb"),
    ]
    results = probe(world, "submitter_b", [("read", report), *published])
    assert [s for s, _ in results.values()] == ["ok", "denied", "denied"], results
    assert probe(world, "analyst_b", [("read", report)])[f"read {report}"][0] == "ok"
    outsider = probe(world, "outsider", [("read", report), *published])
    assert {s for s, _ in outsider.values()} == {"denied"}, outsider


def test_missing_groups_are_a_configuration_error(tmp_path: Path) -> None:
    _require_root()
    prefix = f"fxt{secrets.token_hex(3)}"
    policy = load_policy(_test_policy(tmp_path, prefix))
    (tmp_path / "home").mkdir()
    with pytest.raises(ConfigurationError, match=rf"groupadd {prefix}-all"):
        secure_home(tmp_path / "home", [A], policy=policy)
    assert not any(g.gr_name.startswith(prefix) for g in grp.getgrall())


def test_every_registered_agency_gets_valid_group_names() -> None:
    from flux_pipelines.contracts.registry import load_registry

    agencies = [a.id for a in load_registry().agencies]
    names = required_groups(load_policy().posix, agencies)
    assert len(names) == 1 + 4 * len(agencies) and max(map(len, names)) <= 32
    long = load_policy().posix.model_copy(update={"analysts": "flux-{agency}-analysts"})
    with pytest.raises(ConfigurationError, match="flux-library-of-congress-analysts"):
        required_groups(long, agencies)


def test_apply_is_idempotent_refuses_links_and_check_finds_drift(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small home of its own: links planted, files loosened; `flux access` sees it all."""
    home = Path(tempfile.mkdtemp(prefix="flux-access-drift-"))
    outside = Path(tempfile.mkdtemp(prefix="flux-access-outside-"))
    monkeypatch.setenv("FLUX_ACCESS_POLICY", str(world.policy_file))
    args = ["--home", str(home), "--agency", A, "--agency", B]
    runner, umask = CliRunner(), os.umask(0o022)
    try:
        secret = outside / "secret.txt"
        secret.write_text("not Flux's")
        (home / "published" / A / A_DATASET).mkdir(parents=True)
        (home / "published" / A / A_DATASET / f"{DAY}.parquet").write_bytes(b"PAR1")
        (home / "published").joinpath(B).symlink_to(outside)  # B's folder is a link
        (home / "published" / A / "leak").symlink_to(secret)

        applied = runner.invoke(_app(), ["access", "apply", *args])
        assert applied.exit_code == 1, applied.output  # links refused
        assert os.umask(0o022) == PRIVATE_UMASK  # the flux command set the private umask
        assert "published/nga: not a real folder" in applied.output
        assert "published/nasa/leak: symbolic link" in applied.output
        for target in (secret, outside):  # never followed: modes and groups untouched
            assert os.stat(target).st_gid == 0
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o644

        (home / "published" / A / "leak").unlink()
        (home / "published" / B).unlink()
        assert runner.invoke(_app(), ["access", "apply", *args]).exit_code == 0
        again = secure_home(home, [A, B], policy=world.policy)
        assert again.clean, again  # idempotent: nothing left to change
        assert runner.invoke(_app(), ["access", "check", *args]).exit_code == 0

        loose = home / "published" / A / A_DATASET / f"{DAY}.parquet"
        loose.chmod(0o644)
        os.chown(loose, -1, 0)
        (home / "warehouse").chmod(0o755)
        checked = runner.invoke(_app(), ["access", "check", *args])
        assert checked.exit_code == 1
        assert f"{loose}: group root ->" in checked.output and "mode 0644 -> 0640" in checked.output
        assert f"{home / 'warehouse'}: mode 0755 -> 0700" in checked.output
        assert runner.invoke(_app(), ["access", "apply", *args]).exit_code == 0
        assert runner.invoke(_app(), ["access", "check", *args]).exit_code == 0
    finally:
        os.umask(umask)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


def _app():  # type: ignore[no-untyped-def]
    from flux_pipelines.cli.main import app

    return app


def test_apply_moves_an_old_layout_and_check_reports_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A home of the layout before per-agency folders: `check` names what is out of place,
    `apply` moves it into the agency's folders (then secured like the rest), once."""
    home = Path(tempfile.mkdtemp(prefix="flux-access-layout-"))
    monkeypatch.setenv("FLUX_ACCESS_POLICY", str(world.policy_file))
    args = ["--home", str(home), "--agency", A, "--agency", B]
    runner = CliRunner()
    try:
        old_db = home / "warehouse" / f"{A}.duckdb"
        old_db.parent.mkdir(parents=True)
        with duckdb.connect(str(old_db)) as conn:
            conn.execute("CREATE TABLE meteorites AS SELECT range AS id FROM range(7)")
        old_receipt = home / "warehouse" / A / "receipts" / A_DATASET / f"{DAY}.json"
        old_receipt.parent.mkdir(parents=True)
        old_receipt.write_text('{"kept": true}', encoding="utf-8")

        checked = runner.invoke(_app(), ["access", "check", *args])
        assert checked.exit_code == 1
        assert f"{old_db}: layout before per-agency folders" in checked.output
        assert old_db.exists()  # checking moves nothing

        applied = runner.invoke(_app(), ["access", "apply", *args])
        assert applied.exit_code == 0, applied.output
        assert f"moved {old_db} -> {agency_db(home, A)}" in applied.output
        with duckdb.connect(str(agency_db(home, A)), read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM meteorites").fetchall() == [(7,)]
        moved = agency_receipts(home, A) / A_DATASET / f"{DAY}.json"
        assert moved.read_text(encoding="utf-8") == '{"kept": true}'
        assert not old_db.exists() and not old_receipt.exists()
        for private in (agency_db(home, A), moved):  # secured as the zone wants
            assert stat.S_IMODE(os.stat(private).st_mode) & 0o077 == 0
        assert runner.invoke(_app(), ["access", "check", *args]).exit_code == 0
        again = runner.invoke(_app(), ["access", "apply", *args])
        assert again.exit_code == 0 and "moved" not in again.output
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- group membership against access.yaml's members ------------------------------------------


def _policy_with_members(folder: Path, prefix: str, members: dict[str, Any]) -> Path:
    path = _test_policy(folder, prefix)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["members"] = members
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_group_membership_drift_is_found_with_real_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real users and groups: one analyst misses the all-analysts group, an intruder sits
    in nasa's analysts group without a role, a listed user does not exist. `check` lists
    each with the command that fixes it; once fixed, membership is clean."""
    _require_root()
    prefix = f"fxt{secrets.token_hex(3)}"
    analyst, entitled, submitter = f"{prefix}-an", f"{prefix}-pii", f"{prefix}-sub"
    intruder, ghost = f"{prefix}-intruder", f"{prefix}-ghost"
    members = {A: {"analysts": [analyst, entitled, ghost], "submitters": [submitter],
                   "personal_data": [entitled]}}  # fmt: skip
    try:
        _run("groupadd", prefix)
        policy_file = _policy_with_members(tmp_path, prefix, members)
        policy = load_policy(policy_file)
        g, everyone = policy.posix.for_agency(A), policy.posix.all_analysts
        home = tmp_path / "home"
        home.mkdir()
        secure_home(home, [A], create_groups=True, policy=policy)  # makes the groups
        memberships = {
            analyst: [g.analysts, g.report_readers],  # not in the all-analysts group
            entitled: [g.analysts, g.report_readers, everyone, g.personal_data],
            submitter: [g.submitters, g.report_readers],
            intruder: [g.analysts],  # holds no role in members
        }
        for user, groups in memberships.items():
            _run("useradd", "-M", "-N", "-g", prefix, "-G", ",".join(groups), user)

        outcome = secure_home(home, [A], fix=False, policy=policy)
        assert sorted(outcome.membership) == sorted(
            [
                f"membership: access.yaml members names user {ghost!r}, who does not exist "
                "on this host; create it (useradd) or remove it from members",
                f"membership: {analyst} is not in {everyone} though access.yaml provisions "
                f"it; add it: gpasswd -a {analyst} {everyone}",
                f"membership: {intruder} is in {g.analysts} though access.yaml gives it no "
                f"role that needs it; remove it: gpasswd -d {intruder} {g.analysts} (or "
                "change its primary group)",
            ]
        )
        assert not outcome.clean and set(outcome.membership) <= set(outcome.refused)
        monkeypatch.setenv("FLUX_ACCESS_POLICY", str(policy_file))
        checked = CliRunner().invoke(_app(), ["access", "check", "--home", str(home),
                                              "--agency", A])  # fmt: skip
        assert checked.exit_code == 1 and f"gpasswd -d {intruder} {g.analysts}" in checked.output

        _run("gpasswd", "-a", analyst, everyone)
        _run("gpasswd", "-d", intruder, g.analysts)
        members[A]["analysts"].remove(ghost)
        fixed = load_policy(_policy_with_members(tmp_path, prefix, members))
        assert secure_home(home, [A], fix=False, policy=fixed).membership == []
        # without members in the policy, membership is the directory service's: not checked
        _run("gpasswd", "-a", intruder, g.analysts)
        assert secure_home(home, [A], fix=False, policy=policy.model_copy(
            update={"members": None})).membership == []  # fmt: skip
    finally:
        _remove(prefix)


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({A: {"analysts": ["ann"]}, B: {"submitters": ["ann"]}}, "one identity acts for one"),
        ({A: {"analysts": ["ann"], "personal_data": ["bob"]}}, "not analysts of this agency"),
        ({A: {"analysts": ["Ann Smith"]}}, "not POSIX user names"),
        ({"NASA!": {"analysts": ["ann"]}}, "not a valid id"),
    ],
)
def test_members_that_cannot_be_provisioned_are_refused(
    tmp_path: Path, members: dict[str, Any], match: str
) -> None:
    path = _policy_with_members(tmp_path, "fxtbad", members)
    with pytest.raises(ConfigurationError, match=match):
        load_policy(path)


def test_members_of_an_unregistered_agency_are_refused(tmp_path: Path) -> None:
    policy = load_policy(_policy_with_members(tmp_path, "fxtbad", {"atlantis": {}}))
    (tmp_path / "home").mkdir()
    with pytest.raises(ConfigurationError, match="atlantis is no registered agency"):
        secure_home(tmp_path / "home", [A], policy=policy)
