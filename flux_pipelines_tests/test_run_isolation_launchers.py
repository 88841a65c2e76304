"""Every run's container mounts only its run's folders of FLUX_HOME, in Helm and in compose.

Offline (no cluster, no Docker engine here): the real launchers are built by a real Dagster
instance from the deployment files' own run-launcher config (deploy/helm/values.yaml's
CustomRunLauncher, deploy/dagster.docker.yaml), real runs are created from the real Flux
definitions, and the launchers' own config-building methods say what each run's container
gets, read as launch and resume read it (``creating_container_for``):
``get_container_context_for_run`` (Kubernetes; the Job dagster-k8s builds from it is
validated against the Kubernetes 1.30 and 1.37 schemas) and ``get_container_context``
(Docker: the ``volumes`` handed to ``containers.create``). What the cluster or the engine
then does with them is not observed here (deploy/README.md, "Not run here").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_k8s.job import construct_dagster_k8s_job
from kubernetes.client import ApiClient

from flux_pipelines.access.run_pods import RunMount, agency_run_mounts, shared_run_zones
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.instance.docker_launcher import FluxDockerRunLauncher, other_volumes
from flux_pipelines.instance.k8s_launcher import FluxK8sRunLauncher
from flux_pipelines_tests.test_deploy import (
    K8S_VERSIONS,
    compose_instance,
    dockerfile_env,
    helm,
    run_launcher_config,
    validate_k8s,
)

HOME = dockerfile_env()["FLUX_HOME"]
HOST_DIR = "/srv/flux-home"
IMAGE = "registry.example.org/flux/flux-pipelines:0.1.0"
A, B, C = "nasa", "nga", "epa"  # agency ids (and keys)
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: offline, user: {token: none}}]
contexts: [{name: offline, context: {cluster: offline, user: offline}}]
current-context: offline
"""


# --- the launchers, as the deployments configure them -----------------------------------------
@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """An instance whose run launcher is the Helm values' one (with a kubeconfig instead of
    the in-cluster service account: the only setting changed)."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(KUBECONFIG, encoding="utf-8")
    custom = helm()["runLauncher"]["config"]["customRunLauncher"]
    config = {**custom["config"], "load_incluster_config": False,
              "kubeconfig_file": str(kubeconfig)}  # fmt: skip
    launcher = {"module": custom["module"], "class": custom["class"], "config": config}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        assert isinstance(instance.run_launcher, FluxK8sRunLauncher)
        yield instance


@pytest.fixture(scope="module")
def docker() -> Iterator[dg.DagsterInstance]:
    """An instance whose run launcher is the compose instance's one, with the environment
    compose gives the daemon."""
    env = {"FLUX_HOME_HOST_DIR": HOST_DIR, "FLUX_IMAGE": "flux-pipelines:local"}
    with (
        dg.instance_for_test(
            overrides={"run_launcher": compose_instance()["run_launcher"]}, set_dagster_home=False
        ) as instance,
        pytest.MonkeyPatch.context() as env_patch,
    ):
        for name, value in env.items():
            env_patch.setenv(name, value)
        assert isinstance(instance.run_launcher, FluxDockerRunLauncher)
        yield instance


# --- runs of each kind, from the real definitions ---------------------------------------------
def key(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(list(parts))


def job_run(instance: dg.DagsterInstance, name: str, **kwargs: Any) -> dg.DagsterRun:
    return instance.create_run_for_job(defs.resolve_job_def(name), **kwargs)


def selection_run(instance: dg.DagsterInstance, *keys: dg.AssetKey) -> dg.DagsterRun:
    """A run launched from the asset graph: Dagster's implicit asset job, no job tags."""
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(keys))
    return instance.create_run_for_job(job, asset_selection=frozenset(keys))


def agency(agency_id: str) -> dict[str, bool]:
    return {m.sub_path: m.read_only for m in agency_run_mounts(agency_id)}


SHARED = {m.sub_path: m.read_only for m in shared_run_zones()}


def k8s_mounts(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, bool]:
    """subPath -> readOnly of the FLUX_HOME volume in the launcher's container context, after
    checking every such mount sits at the run pod's FLUX_HOME/<subPath>."""
    launcher = instance.run_launcher
    assert isinstance(launcher, FluxK8sRunLauncher)
    with launcher.creating_container_for(run):  # as launch and resume read it
        context = launcher.get_container_context_for_run(run)
    mounts = [m for m in context.run_k8s_config.container_config["volume_mounts"]
              if m["name"] == run_launcher_config()["flux_home_volume"]]  # fmt: skip
    for m in mounts:
        assert m["mount_path"] == f"{HOME}/{m['sub_path']}", m
    assert len({m["sub_path"] for m in mounts}) == len(mounts)
    return {m["sub_path"]: m["read_only"] for m in mounts}


def docker_mounts(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, bool]:
    """sub-folder -> read-only of the home's bind mounts the Docker launcher gives the run;
    its other volumes are exactly the compute logs' one."""
    launcher = instance.run_launcher
    assert isinstance(launcher, FluxDockerRunLauncher)
    with launcher.creating_container_for(run):  # as launch and resume read it
        volumes = launcher.get_container_context(run).container_kwargs["volumes"]
    found, others = {}, []
    for spec in volumes:
        if not spec.startswith(HOST_DIR + "/"):
            others.append(spec)
            continue
        source, target, mode = spec.split(":")
        sub = source.removeprefix(HOST_DIR + "/")
        assert target == f"{HOME}/{sub}" and mode in ("ro", "rw"), spec
        found[sub] = mode == "ro"
    assert others == compose_instance()["run_launcher"]["config"]["container_kwargs"]["volumes"]
    assert len(found) == len(volumes) - len(others)
    return found


def both(k8s: dg.DagsterInstance, docker: dg.DagsterInstance, make: Any) -> dict[str, bool]:
    """The run's mounts under each launcher (a run made in each instance): they must agree,
    and neither mounts the whole home or a whole zone."""
    in_k8s, in_docker = k8s_mounts(k8s, make(k8s)), docker_mounts(docker, make(docker))
    assert in_k8s == in_docker
    zones = {"", "landing", "warehouse", "receipts", "published", "outbox"}
    assert not zones & set(in_k8s), "a whole zone (or the home) is mounted"
    return in_k8s


def writable_agencies(mounts: dict[str, bool], zone: str) -> set[str]:
    return {p.split("/", 1)[1] for p, ro in mounts.items() if p.startswith(zone + "/") and not ro}


# --- each kind of run ---------------------------------------------------------------------
def test_an_agency_job_mounts_its_agency_only(
    k8s: dg.DagsterInstance, docker: dg.DagsterInstance
) -> None:
    for name in (f"ingest_{A}", f"spending_risk_{A}"):
        mounts = both(k8s, docker, lambda i, n=name: job_run(i, n, tags={"agency": A}))
        assert mounts == agency(A)
        assert mounts[f"landing/{A}"] is True  # deliveries are read, never written


def test_an_asset_graph_selection_in_one_agency_mounts_that_agency_only(
    k8s: dg.DagsterInstance, docker: dg.DagsterInstance
) -> None:
    keys = [key(A, "raw_meteorites"), key(A, "meteorites"), key(A, "meteorites_quarantine")]
    assert both(k8s, docker, lambda i: selection_run(i, *keys)) == agency(A)


def test_a_selection_across_two_agencies_mounts_both_and_no_third(
    k8s: dg.DagsterInstance, docker: dg.DagsterInstance
) -> None:
    mounts = both(k8s, docker, lambda i: selection_run(i, key(A, "meteorites"), key(B, "artworks")))
    assert mounts == agency(A) | agency(B)
    for zone in ("warehouse", "published", "receipts", "outbox"):
        assert writable_agencies(mounts, zone) == {A, B}
    assert not [p for p in mounts if p.endswith(f"/{C}")]


def test_a_cross_agency_output_reads_agencies_read_only(
    k8s: dg.DagsterInstance, docker: dg.DagsterInstance
) -> None:
    registry = load_registry()
    mounts = both(k8s, docker, lambda i: selection_run(i, key("cross_agency", "constituents")))
    sources = {a.id for a in registry.agencies_for("constituents")}
    assert len(sources) > 1
    assert mounts == {
        **{f"published/{a}": True for a in sources},
        "published/cross_agency": False,
        **SHARED,
    }


def test_the_daily_refresh_writes_catalogs_and_cross_agency_outputs_only(
    k8s: dg.DagsterInstance, docker: dg.DagsterInstance
) -> None:
    """The refresh rebuilds every agency's catalog (published/<agency>/catalog.duckdb) and the
    agency-level reconciliations (inside the reconciled agency's file); everything else of
    the agencies it only reads (landing/ for delivery status), and only cross-agency outputs
    are written elsewhere."""
    from flux_pipelines.defs.spending.reconciliation import agency_totals_keys

    registry = load_registry()
    prefixes = {k.path[0] for k in agency_totals_keys(registry)}
    reconciled = {a.id for a in registry.agencies if a.key in prefixes}
    mounts = both(k8s, docker, lambda i: job_run(i, "daily_refresh"))
    everyone = {a.id for a in registry.agencies}
    assert reconciled and reconciled < everyone
    assert writable_agencies(mounts, "published") == everyone | {"cross_agency"}  # catalogs
    assert writable_agencies(mounts, "warehouse") == reconciled
    assert {p.split("/", 1)[1] for p in mounts if p.startswith("warehouse/")} == reconciled
    assert {p for p, ro in mounts.items() if p.startswith("landing/")} == {
        f"landing/{a}" for a in everyone
    } and all(mounts[f"landing/{a}"] for a in everyone)
    assert mounts["published/cross_agency"] is False


def test_catalogs_mount_only_what_they_rebuild(
    k8s: dg.DagsterInstance, docker: dg.DagsterInstance
) -> None:
    own = both(k8s, docker, lambda i: selection_run(i, key(A, "published_catalog")))
    assert own == {f"published/{A}": False, **SHARED}
    shared = both(k8s, docker, lambda i: selection_run(i, key("cross_agency", "published_catalog")))
    assert shared == {"published/cross_agency": False, **SHARED}


def test_the_purge_mounts_exactly_what_it_deletes_from(
    k8s: dg.DagsterInstance, docker: dg.DagsterInstance
) -> None:
    everyone = {a.id for a in load_registry().agencies}
    mounts = both(k8s, docker, lambda i: job_run(i, "flux_purge"))
    zones = ("warehouse", "published", "outbox")
    assert mounts == {**{f"{z}/{a}": False for z in zones for a in everyone}, **SHARED}
    # An op selection (one agency's purge, e.g. re-executed alone) mounts that agency only.
    job = defs.resolve_job_def("flux_purge").get_subset(op_selection=[f"purge_{A}"])
    one = both(k8s, docker, lambda i: i.create_run_for_job(job, op_selection=[f"purge_{A}"]))
    assert one == {**{f"{z}/{A}": False for z in zones}, **SHARED}


def test_a_k8s_config_tag_cannot_bring_the_whole_home_back(k8s: dg.DagsterInstance) -> None:
    """A run tag mounting the home (the mechanism this launcher replaced) is overridden."""
    import json

    tag = {"container_config": {"volume_mounts": [
        {"name": "flux-home", "mountPath": HOME},
        {"name": "sneaky", "mountPath": "/mnt/home"},
    ]}, "pod_spec_config": {"volumes": [
        {"name": "sneaky", "persistentVolumeClaim": {"claimName": "flux-home"}},
    ]}}  # fmt: skip
    run = job_run(k8s, f"ingest_{A}", tags={"agency": A, "dagster-k8s/config": json.dumps(tag)})
    launcher = k8s.run_launcher
    assert isinstance(launcher, FluxK8sRunLauncher)
    with launcher.creating_container_for(run):
        context = launcher.get_container_context_for_run(run)
    mounts = context.run_k8s_config.container_config["volume_mounts"]
    assert {m["sub_path"]: m["read_only"] for m in mounts} == agency(A)
    assert {m["name"] for m in mounts} == {"flux-home"}


def test_runs_that_cannot_be_classified_are_refused(
    k8s: dg.DagsterInstance, docker: dg.DagsterInstance
) -> None:
    """Fail closed: no mounts at all (not the whole home), a classified error naming the run."""

    @dg.asset(key=key("cross_agency", "mystery"))
    def mystery() -> None: ...

    @dg.op
    def chore() -> None: ...

    @dg.job
    def housekeeping() -> None:
        chore()

    extra = dg.Definitions(assets=[mystery], jobs=[housekeeping])
    unknown = dg.Definitions.merge(defs, extra)
    for instance in (k8s, docker):
        launcher = instance.run_launcher
        build = (
            launcher.get_container_context_for_run
            if isinstance(launcher, FluxK8sRunLauncher)
            else launcher.get_container_context  # type: ignore[attr-defined]
        )
        job = unknown.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={key("cross_agency", "mystery")}
        )
        runs = {
            "cross_agency/mystery": instance.create_run_for_job(
                job, asset_selection=frozenset({key("cross_agency", "mystery")})
            ),
            "housekeeping": instance.create_run_for_job(unknown.resolve_job_def("housekeeping")),
            f"agency={A}": job_run(instance, f"ingest_{B}", tags={"agency": A}),
        }
        for why, run in runs.items():
            with (
                pytest.raises(ConfigurationError, match=run.run_id) as caught,
                launcher.creating_container_for(run),  # type: ignore[attr-defined]
            ):
                build(run)
            assert why in str(caught.value) and "whole home" in str(caught.value)
            # The launchers' own pod/container creation (launch and resume) refuses it
            # before any API is called.
            with pytest.raises(ConfigurationError, match=run.run_id):
                if isinstance(launcher, FluxK8sRunLauncher):
                    launcher._launch_k8s_job_with_args("dagster-run", [], run)
                else:
                    launcher._launch_container_with_command(run, IMAGE, [])  # type: ignore[attr-defined]
            # Terminate and health checks read the same context for its namespace or client
            # only: a run in flight stays stoppable whatever became of its classification,
            # and what they get holds no mount of the home at all.
            looked_up = build(run)
            if isinstance(launcher, FluxK8sRunLauncher):
                mounts = looked_up.run_k8s_config.container_config.get("volume_mounts") or []
                home = run_launcher_config()["flux_home_volume"]
                assert not [m for m in mounts if m["name"] == home], mounts
            else:
                volumes = looked_up.container_kwargs.get("volumes") or []
                assert not [v for v in volumes if v.startswith(HOST_DIR)], volumes


def test_every_asset_of_the_code_location_is_classified(k8s: dg.DagsterInstance) -> None:
    """A new asset without declared reads fails here, not at its first launch."""
    from flux_pipelines.access.run_pods import RunFacts, run_mounts

    registry = load_registry()
    graph = defs.resolve_asset_graph()
    for asset in graph.get_all_asset_keys():
        facts = RunFacts("r", "__ASSET_JOB", {}, frozenset({tuple(asset.path)}), frozenset())
        mounts = run_mounts(facts, registry)
        assert {m.sub_path for m in shared_run_zones()} <= {m.sub_path for m in mounts}
        prefix = asset.path[0]
        own = next((a.id for a in registry.agencies if a.key == prefix), None)
        for m in mounts:
            if m.sub_path.startswith(("warehouse/", "receipts/", "outbox/")) and not m.read_only:
                assert m.sub_path.split("/", 1)[1] == own, (asset, m)  # its own agency only


# --- the Kubernetes Job dagster-k8s builds from the context -------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_run_pod_is_a_valid_job_with_only_the_runs_mounts(
    version: str, k8s: dg.DagsterInstance
) -> None:
    launcher = k8s.run_launcher
    assert isinstance(launcher, FluxK8sRunLauncher)
    run = selection_run(k8s, key(A, "meteorites"), key(B, "artworks"))
    with launcher.creating_container_for(run):
        context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),  # type: ignore[no-untyped-call]
        args=["dagster", "api", "execute_run", "{}"],
        job_name=f"dagster-run-{run.run_id}",
        user_defined_k8s_config=context.run_k8s_config,
        pod_name=f"dagster-run-{run.run_id}",
        component="run_worker",
        labels={"dagster/run-id": run.run_id},
    )
    body = ApiClient().sanitize_for_serialization(job)
    validate_k8s(body, "io.k8s.api.batch.v1.Job", version)
    spec = body["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    home_mounts = {m["subPath"]: m.get("readOnly", False) for m in container["volumeMounts"]
                   if m["name"] == "flux-home"}  # fmt: skip
    assert home_mounts == agency(A) | agency(B)
    assert HOME not in {m["mountPath"] for m in container["volumeMounts"]}
    # the launcher's other settings survive: labels, resources, security, the volume
    assert body["spec"]["template"]["metadata"]["labels"]["flux-role"] == "run-worker"
    assert container["resources"] == run_launcher_config()["resources"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert "flux-home" in {v["name"] for v in spec["volumes"]}


# --- the Docker launcher's own guards -----------------------------------------------------------
def test_docker_volumes_reaching_the_home_are_replaced_and_bypasses_refused() -> None:
    kwargs = {"volumes": [f"{HOST_DIR}:/data", f"flux-home:{HOME}:ro", "logs:/logs"]}
    assert other_volumes(kwargs, host_dir=HOST_DIR, home=HOME) == ["logs:/logs"]
    for bypass in ({"volumes_from": ["code-server"]}, {"privileged": True}):
        with pytest.raises(ConfigurationError, match="refused"):
            other_volumes(bypass, host_dir=HOST_DIR, home=HOME)


def test_the_mount_list_is_one_source_for_both_renderings() -> None:
    from flux_pipelines.instance.docker_launcher import docker_binds
    from flux_pipelines.instance.k8s_launcher import k8s_volume_mounts

    mounts = (RunMount(f"landing/{A}", True), RunMount(f"published/{A}", False))
    assert docker_binds(mounts, host_dir=HOST_DIR + "/", home=HOME) == [
        f"{HOST_DIR}/landing/{A}:{HOME}/landing/{A}:ro",
        f"{HOST_DIR}/published/{A}:{HOME}/published/{A}:rw",
    ]
    assert [m["sub_path"] for m in k8s_volume_mounts(mounts, volume="v", home=HOME)] == [
        m.sub_path for m in mounts
    ]
    with pytest.raises(ConfigurationError, match="absolute"):
        k8s_volume_mounts(mounts, volume="v", home="var/lib/flux")
    assert Path(HOME).is_absolute()


def test_exports_read_the_content_datasets_agencies_read_only() -> None:
    """An export's run reads the published days of every agency delivering a content
    dataset, read-only."""
    from flux_pipelines.access.run_pods import cross_agency_reads
    from flux_pipelines.collections.use_cases import load_use_cases
    from flux_pipelines.names import export_name

    registry = load_registry()
    agencies = {a.id for d in registry.content_datasets() for a in registry.agencies_for(d)}
    assert agencies
    for use_case in load_use_cases().use_cases:
        reads = cross_agency_reads(export_name(use_case.id), registry)
        assert reads is not None
        assert {m.sub_path: m.read_only for m in reads} == {
            f"published/{a}": True for a in agencies
        }
