"""Write isolation of runs: an agency's runs mount that agency's folders and no other's.

Which folders a run mounts comes from ``access/run_pods.py`` (rendered by both launchers:
test_run_isolation_launchers.py). Here: an agency's mount list itself, that agency jobs no
longer carry a mounts tag (the launcher is the one source), that ``flux access apply`` and
the layout Job make every folder those mounts need, and a real load shows the mounts are
enough: every file it creates or changes lies inside them, and nothing of another agency,
nor of its own landing folder, changes (also with only those folders bind-mounted).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flux_pipelines.access.layout import main as layout_main
from flux_pipelines.access.layout import missing_run_folders
from flux_pipelines.access.permissions import PER_AGENCY_PRIVATE, layout
from flux_pipelines.access.policy import load_policy
from flux_pipelines.access.run_pods import agency_run_mounts
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.names import AGENCY_ZONES, agency_db
from flux_pipelines_tests.conftest import deliver, materialize
from flux_pipelines_tests.test_deploy import (
    DEPLOY,
    K8S_VERSIONS,
    helm,
    run_launcher_config,
    validate_k8s,
)

A, B = "nasa", "nga"
DAY, DAY2 = "2026-02-02", "2026-02-03"


def launcher() -> dict[str, Any]:
    return run_launcher_config()


def code_server_env() -> dict[str, str]:
    (deployment,) = helm()["dagster-user-deployments"]["deployments"]
    return {var["name"]: var["value"] for var in deployment["env"]}


def test_every_agency_mounts_only_its_own_folders() -> None:
    agencies = [a.id for a in load_registry().agencies]
    for agency in agencies:
        mounts = {m.sub_path: m.read_only for m in agency_run_mounts(agency)}
        own = {f"{zone}/{agency}": not writes for zone, writes in AGENCY_ZONES}
        shared = {"audit": False, "state": False, "run_errors": False}
        assert mounts == own | shared
        assert own[f"landing/{agency}"] is True  # deliveries are read, never written
        for path in mounts:
            others = [b for b in agencies if b != agency and path.endswith(f"/{b}")]
            assert others == [], f"{agency}'s run mounts {path}"
            assert path not in {zone for zone, _ in AGENCY_ZONES}  # never a whole zone


def test_agency_jobs_carry_no_mounts_tag() -> None:
    """One source of truth: the launchers derive every run's mounts; a job's tag would be a
    second (and the launcher overrides it anyway: test_run_isolation_launchers.py)."""
    from flux_pipelines.defs.ingest.jobs import agency_jobs
    from flux_pipelines.defs.spending.jobs import risk_jobs

    registry = load_registry()
    for jobs in (agency_jobs(registry), risk_jobs(registry)):
        for agency, job in jobs.items():
            assert job.run_tags == {"agency": registry.agency(agency).key}


def test_every_run_folder_is_a_zone_flux_access_apply_makes() -> None:
    posix = load_policy().posix
    gids = dict.fromkeys(
        [posix.all_analysts]
        + [
            name
            for a in (A, B)
            for name in (
                posix.for_agency(a).analysts,
                posix.for_agency(a).submitters,
                posix.for_agency(a).report_readers,
                posix.for_agency(a).personal_data,
            )
        ],
        0,
    )
    made = {"/".join(z.path) for z in layout(posix, [A, B], gids) if z.create}
    for agency in (A, B):
        wanted = {m.sub_path for m in agency_run_mounts(agency)} - {"run_errors"}
        assert wanted <= made, wanted - made
    assert {f"{zone}/{A}" for zone in PER_AGENCY_PRIVATE} <= made


def test_the_layout_command_makes_every_folder_a_run_pod_mounts(tmp_path: Path) -> None:
    agencies = [a.id for a in load_registry().agencies]
    assert len(missing_run_folders(tmp_path, agencies)) == 5 * len(agencies) + 3
    assert layout_main(["--home", str(tmp_path), "--check"]) == 1
    assert layout_main(["--home", str(tmp_path)]) == 0
    assert missing_run_folders(tmp_path, agencies) == []
    assert layout_main(["--home", str(tmp_path), "--check"]) == 0


def snapshot(home: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under the home: (size, mtime, inode)."""
    found = {}
    for path in home.rglob("*"):
        if path.is_file():
            st = path.stat()
            found[path.relative_to(home).as_posix()] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def test_an_agency_run_writes_only_inside_its_mounts(tmp_path: Path) -> None:
    """Two agencies loaded; then a run of A's: what it created, changed or removed lies in
    A's run mounts, all of it, and nothing of B's or of A's landing folder changed."""
    deliver(tmp_path, A, "meteorites", DAY, rows=40, seed=1)
    deliver(tmp_path, B, "constituents", DAY, rows=40, seed=2)
    assert materialize(tmp_path, [(A, "meteorites"), (B, "constituents")], DAY).success
    deliver(tmp_path, A, "meteorites", DAY2, rows=40, seed=3)
    before = snapshot(tmp_path)
    assert materialize(tmp_path, [(A, "meteorites")], DAY2).success
    after = snapshot(tmp_path)
    touched = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert any(p.startswith(f"warehouse/{A}/") for p in touched)  # the run did write
    writable = [m.sub_path + "/" for m in agency_run_mounts(A) if not m.read_only]
    outside = sorted(p for p in touched if not p.startswith(tuple(writable)))
    assert outside == [], f"a run of {A} wrote outside its mounts: {outside}"
    assert not [p for p in touched if f"/{B}/" in f"/{p}"]
    assert os.path.isdir(tmp_path / "landing" / A / "meteorites" / DAY2)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_layout_job_is_valid_and_runs_the_layout_command(version: str, tmp_path: Path) -> None:
    """deploy/k8s/jobs/flux-home-layout.yaml: a valid Job, the whole home of the claim the
    run pods use, no Secret, and a command the image's Python runs (checked here in-process
    on an empty home)."""
    import yaml

    path = DEPLOY / "k8s" / "jobs" / "flux-home-layout.yaml"
    (job,) = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    validate_k8s(job, "io.k8s.api.batch.v1.Job", version)
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    python, flag, module, *args = container["command"]
    assert (python, flag, module) == ("python", "-m", "flux_pipelines.access.layout")
    env = {e["name"]: e["value"] for e in container["env"]}
    home = code_server_env()["FLUX_HOME"]
    assert args == ["--home", home] and env["FLUX_HOME"] == home
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in spec["volumes"] if "persistentVolumeClaim" in v}  # fmt: skip
    (mount,) = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert (claims[mount["name"]], mount["mountPath"], mount.get("subPath")) == (
        "flux-home", home, None,
    )  # fmt: skip
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] == launcher()["security_context"]["runAsUser"]
    assert "secret" not in json.dumps(spec).lower()
    assert layout_main([*[a if a != home else str(tmp_path) for a in args], "--check"]) == 1
    assert layout_main([a if a != home else str(tmp_path) for a in args]) == 0


# --- the run pod's view, made real: bind mounts in a private mount namespace ------------------

POD = r"""
import json, os, subprocess, sys
home, side, agency, dataset, day, other = sys.argv[1:7]
mounts = json.loads(sys.argv[7])

def run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)

# What a run pod sees at FLUX_HOME: an empty folder, and the tag's sub-paths bind-mounted
# (a Kubernetes subPath mount is a bind mount) at the same paths, read-only where tagged so.
run("mount", "--make-rprivate", "/")
run("mount", "--bind", home, side)
run("mount", "-t", "tmpfs", "tmpfs", home)
for sub, read_only in mounts:
    os.makedirs(os.path.join(home, sub), exist_ok=True)
    run("mount", "--bind", os.path.join(side, sub), os.path.join(home, sub))
    if read_only:
        run("mount", "-o", "remount,bind,ro", os.path.join(home, sub))
run("umount", "-l", side)

sys.path.insert(0, os.getcwd())
from flux_pipelines_tests.conftest import materialize
out = {"loaded": bool(materialize(home, [(agency, dataset)], day).success)}

def attempt(path):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "xb") as handle:
            handle.write(b"planted")
        return "written"
    except OSError as exc:
        return exc.strerror

out["own landing"] = attempt(os.path.join(home, "landing", agency, "planted.csv"))
out["other published"] = attempt(os.path.join(home, "published", other, "planted.parquet"))
out["other warehouse"] = attempt(os.path.join(home, "warehouse", other, "planted.duckdb"))
print(json.dumps(out))
"""


def _require_mount_namespaces() -> None:
    import shutil
    import subprocess

    why = None
    if os.geteuid() != 0 or not shutil.which("unshare"):
        why = "needs root and unshare(1) to make a private mount namespace"
    elif subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        why = "unshare -m is not permitted here"
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the run-pod mount test {why}; under CI it must run")
    pytest.skip(f"the run-pod mount test {why}")


@pytest.mark.slow
def test_an_agency_run_loads_with_only_its_mounts_and_reaches_no_other_agency(
    tmp_path: Path,
) -> None:
    """The tag's mounts, made with the kernel's own bind mounts (what a subPath mount is) in
    a private mount namespace over the very FLUX_HOME path: A's next load runs there and
    succeeds, reading and writing only through them; its landing folder is read-only, and
    what it writes where B's folders would be never reaches B's real folders."""
    import subprocess
    import sys

    _require_mount_namespaces()
    home, side = tmp_path / "home", tmp_path / "side"
    side.mkdir()
    deliver(home, A, "meteorites", DAY, rows=40, seed=1)
    deliver(home, B, "constituents", DAY, rows=40, seed=2)
    assert materialize(home, [(A, "meteorites"), (B, "constituents")], DAY).success
    deliver(home, A, "meteorites", DAY2, rows=40, seed=3)
    b_before = {p: v for p, v in snapshot(home).items() if f"/{B}/" in f"/{p}"}
    mounts = [[m.sub_path, m.read_only] for m in agency_run_mounts(A)]
    for sub, _ in mounts:  # what the layout Job makes before the first run
        (home / sub).mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["unshare", "-m", sys.executable, "-c", POD, str(home), str(side), A, "meteorites",
         DAY2, B, json.dumps(mounts)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "loaded": True,
        "own landing": "Read-only file system",
        "other published": "written",  # into the pod's own empty folder, not B's
        "other warehouse": "written",
    }, out
    # outside the namespace: A's day 2 is in A's real folders, B's are untouched
    assert (home / "published" / A / "meteorites" / f"{DAY2}.parquet").is_file()
    assert (home / "receipts" / A / "meteorites" / f"{DAY2}.json").is_file()
    with duckdb.connect(str(agency_db(home, A)), read_only=True) as conn:
        days = conn.execute("SELECT DISTINCT _partition_date::VARCHAR FROM meteorites").fetchall()
    assert sorted(d for (d,) in days) == [DAY, DAY2]  # the real working file got the day
    assert {p: v for p, v in snapshot(home).items() if f"/{B}/" in f"/{p}"} == b_before
    assert not list(home.rglob("planted*"))
