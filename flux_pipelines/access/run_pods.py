"""Write isolation of runs: which folders of the Flux home one run mounts, from the run itself.

Every run gets its own container (a Kubernetes run pod: ``instance/k8s_launcher.py``; a
Docker container under compose: ``instance/docker_launcher.py``), and both launchers mount
exactly what ``mounts_for_run`` returns, nothing else of the home. One source of truth:

- an asset of agency A (key prefix ``A``, ``names.py``): A's folders (``names.AGENCY_ZONES``:
  its landing folder read-only; its warehouse, receipts, published and outbox folders
  read-write); A's published catalog only ``published/A``, which is all it reads and writes;
- a cross-agency output (key prefix ``cross_agency``): read-only what it reads (the published
  copies of the agencies it is built from, the landing folders for delivery status),
  read-write only ``published/cross_agency``;
- the purge job: read-write exactly the zones purge deletes from (``ops/purge.py``: each
  purged agency's warehouse, published and outbox folders);
- every run: the agency-less folders every run writes (the audit trail and its anchor in
  ``state/``, which also holds the PII key; the run's last words in ``run_errors/``).

A run spanning agencies A and B (an asset-graph selection, a backfill, a cohort job) gets
A's and B's folders, no other agency's. What the run executes is read from the run: its
asset and check selection, and the steps of its stored execution plan (a job launched whole
carries no selection). Anything not classified here (a new cross-agency asset, an op job
other than the purge, an agency missing from the registry) is refused, never given the
whole home: ``ConfigurationError`` naming the run and what to declare here.

Launchers also read a run's container context when they only look a run up (terminate,
health checks, debug info read its namespace or Docker client). A run that cannot be
classified is refused only when its container is being created (launch, and resume after
a worker crash: ``CreatesRunContainers``); a lookup gets no mount of the home at all
(``mounts_for_lookup``), so a run in flight stays stoppable and monitored even if its
agency has since left the registry, and a container created through any other path gets
the run's own mounts or none: never the whole home.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import (
    AGENCY_ZONES,
    AWARDS_DATASET,
    CATALOG,
    CROSS_AGENCY,
    DELIVERY_STATUS,
    LANDING_ZONE,
    OUTBOX_ZONE,
    PUBLISHED_ZONE,
    PURGE_JOB,
    RECIPIENT_LINKS,
    RISK_DATASET,
    RUN_ERRORS_ZONE,
    SCORECARD,
    WAREHOUSE_ZONE,
    export_name,
    purge_op_name,
)
from flux_pipelines.slugs import check_slug

if TYPE_CHECKING:
    import dagster as dg

    from flux_pipelines.contracts.registry import Agency, Registry

AUDIT_ZONE, STATE_ZONE = "audit", "state"  # the trail, and its second anchor (audit/trail.py)
AGENCY_TAG = "agency"  # the run tag of an agency's jobs (one run per agency: dagster.yaml)
# What purge deletes from, per agency (ops/purge.py): raw Parquet and quarantine rows in its
# working file, published copies, reports.
PURGED_ZONES = (WAREHOUSE_ZONE, PUBLISHED_ZONE, OUTBOX_ZONE)


@dataclass(frozen=True)
class RunMount:
    """One folder of the home a run mounts (``sub_path`` relative to the home)."""

    sub_path: str
    read_only: bool


class CreatesRunContainers:
    """Mixin of the run launchers: marks, per thread, the run whose container is being
    created, the one moment its mounts are derived (``mounts_for_run``)."""

    _creating = threading.local()

    @contextmanager
    def creating_container_for(self, run: dg.DagsterRun) -> Iterator[None]:
        self._creating.run_id = run.run_id
        try:
            yield
        finally:
            self._creating.run_id = None

    def is_creating_container_for(self, run: dg.DagsterRun) -> bool:
        return getattr(self._creating, "run_id", None) == run.run_id

    def mounts_for_lookup(
        self, run: dg.DagsterRun, instance: dg.DagsterInstance
    ) -> tuple[RunMount, ...]:
        """``mounts_for_run``; for a run that cannot be classified, refused while its
        container is created, no mount of the home for any other read."""
        try:
            return mounts_for_run(run, instance)
        except ConfigurationError:
            if self.is_creating_container_for(run):
                raise
            return ()


def absolute_setting(path: str, setting: str, where: str) -> str:
    """A run launcher's path setting, normalised; refused unless absolute (a relative path
    would mount folders relative to wherever the container or pod starts)."""
    if not path.startswith("/"):
        raise ConfigurationError(
            f"run launcher {setting} {path!r} is not an absolute path: set it in {where}"
        )
    return posixpath.normpath(path)


def shared_run_zones() -> tuple[RunMount, ...]:
    """Folders of no agency that every run writes: the audit trail, its anchor in state/
    (and the PII key it reads there), the run's last words (``instance/launcher.py``)."""
    return tuple(RunMount(zone, False) for zone in (AUDIT_ZONE, STATE_ZONE, RUN_ERRORS_ZONE))


def agency_run_mounts(agency_id: str) -> tuple[RunMount, ...]:
    """What a run of ``agency_id``'s assets mounts: its own folders, then the shared ones."""
    agency = check_slug(agency_id, "agency")
    own = tuple(RunMount(f"{zone}/{agency}", not writes) for zone, writes in AGENCY_ZONES)
    return own + shared_run_zones()


def _published(agencies: Iterable[Agency], *, read_only: bool) -> tuple[RunMount, ...]:
    return tuple(RunMount(f"{PUBLISHED_ZONE}/{a.id}", read_only) for a in agencies)


# --- what a run executes ------------------------------------------------------------------------
@dataclass(frozen=True)
class RunFacts:
    """What a run's mounts are derived from (``run_facts`` reads them off a DagsterRun)."""

    run_id: str
    job_name: str
    tags: Mapping[str, str]
    asset_keys: frozenset[tuple[str, ...]]  # assets it materializes or checks
    steps: frozenset[str]  # the steps it executes (what an op job such as purge does)


def run_facts(run: dg.DagsterRun, instance: dg.DagsterInstance) -> RunFacts:
    """The run's asset and check selection, plus every asset its stored execution plan
    materializes or checks (a job launched whole has no selection), within the steps it
    executes (a re-execution runs some)."""
    keys = {tuple(k.path) for k in run.asset_selection or ()}
    keys |= {tuple(c.asset_key.path) for c in run.asset_check_selection or ()}
    steps: set[str] = set()
    if run.execution_plan_snapshot_id:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        chosen = set(run.step_keys_to_execute or ())
        for step in plan.steps:
            if chosen and step.key not in chosen:
                continue
            steps.add(step.key)
            for output in step.outputs:
                props = output.properties
                if props is not None and props.asset_key is not None:
                    keys.add(tuple(props.asset_key.path))
                if props is not None and props.asset_check_key is not None:
                    keys.add(tuple(props.asset_check_key.asset_key.path))
    return RunFacts(run.run_id, run.job_name, dict(run.tags), frozenset(keys), frozenset(steps))


# --- what each thing it executes needs -----------------------------------------------------------
def _unclassified(facts: RunFacts, what: str, declare: str) -> ConfigurationError:
    return ConfigurationError(
        f"run {facts.run_id} (job {facts.job_name}) refused: {what}, so Flux cannot tell which "
        f"folders of the home it needs, and no run gets the whole home. {declare} in "
        "flux_pipelines/access/run_pods.py, or launch the run from the agency's own job."
    )


def cross_agency_reads(name: str, registry: Registry) -> tuple[RunMount, ...] | None:
    """What the cross-agency output ``name`` reads, read-only (None: not a known output)."""
    if name in registry.contracts and len(registry.agencies_for(name)) > 1:
        return _published(registry.agencies_for(name), read_only=True)  # certified days
    if name == SCORECARD:  # every agency's published scorecard rows
        return _published(registry.agencies, read_only=True)
    if name == CATALOG:  # views over published/cross_agency itself
        return ()
    if name == DELIVERY_STATUS:  # whether a failed day had a delivery
        return tuple(RunMount(f"{LANDING_ZONE}/{a.id}", True) for a in registry.agencies)
    if name == RECIPIENT_LINKS:  # every agency's transactions, the award file's agencies
        datasets = (RISK_DATASET, AWARDS_DATASET)
        sources = {a.id: a for d in datasets for a in registry.agencies_for(d)}
        return _published(sources.values(), read_only=True)
    if name.startswith(export_name("")):  # a use case's export: the content datasets' days
        sources = {a.id: a for d in registry.content_datasets() for a in registry.agencies_for(d)}
        return _published(sources.values(), read_only=True)
    return None


def asset_mounts(key: tuple[str, ...], facts: RunFacts, registry: Registry) -> tuple[RunMount, ...]:
    """What materializing or checking the asset ``key`` needs."""
    by_key = {a.key: a for a in registry.agencies}
    head, name = key[0], key[-1]
    if head in by_key and len(key) == 2:
        agency = by_key[head]
        if name == CATALOG:  # reads and writes only its published folder
            return _published([agency], read_only=False) + shared_run_zones()
        return agency_run_mounts(agency.id)
    if head == CROSS_AGENCY and len(key) == 2:
        reads = cross_agency_reads(name, registry)
        if reads is None:
            raise _unclassified(
                facts, f"it builds {'/'.join(key)}, a cross-agency output with no declared reads",
                f"Add what {name} reads to cross_agency_reads",
            )  # fmt: skip
        return (*reads, RunMount(f"{PUBLISHED_ZONE}/{CROSS_AGENCY}", False), *shared_run_zones())
    raise _unclassified(
        facts, f"it builds {'/'.join(key)}, which is neither a registered agency's asset nor a "
        "cross-agency output", "Register the agency in contracts/agencies.yaml or classify it",
    )  # fmt: skip


def purge_mounts(facts: RunFacts, registry: Registry) -> tuple[RunMount, ...]:
    """The purge job: each purged agency's (its op among the run's steps; all when the run
    carries no plan) warehouse, published and outbox folders, read-write."""
    agencies = [a for a in registry.agencies if not facts.steps or purge_op_name(a) in facts.steps]
    own = tuple(RunMount(f"{zone}/{a.id}", False) for a in agencies for zone in PURGED_ZONES)
    return own + shared_run_zones()


def _check_agency_tag(facts: RunFacts, registry: Registry) -> None:
    """A run tagged with an agency (its job's tag: one run per agency at a time) must stay
    within that agency, else the run queue would not keep the other agency's file to one
    writer."""
    tagged = facts.tags.get(AGENCY_TAG)
    if tagged is None:
        return
    outside = sorted("/".join(k) for k in facts.asset_keys if k[0] != tagged)
    if outside:
        raise _unclassified(
            facts, f"it is tagged agency={tagged} but builds {', '.join(outside[:3])}",
            "Launch it without the agency tag (from the asset graph), or select only "
            f"{tagged}'s assets; nothing needs changing",
        )  # fmt: skip


def run_mounts(facts: RunFacts, registry: Registry) -> tuple[RunMount, ...]:
    """Every folder the run mounts, each once, read-write when anything it runs writes it;
    ``ConfigurationError`` for a run that cannot be classified."""
    _check_agency_tag(facts, registry)
    if facts.asset_keys:
        needed = [m for key in sorted(facts.asset_keys) for m in asset_mounts(key, facts, registry)]
    elif facts.job_name == PURGE_JOB:
        needed = list(purge_mounts(facts, registry))
    else:
        raise _unclassified(
            facts, "it executes no asset and is not the purge job",
            f"Classify job {facts.job_name}",
        )  # fmt: skip
    read_only: dict[str, bool] = {}
    for mount in needed:
        read_only[mount.sub_path] = read_only.get(mount.sub_path, True) and mount.read_only
    return tuple(RunMount(path, ro) for path, ro in sorted(read_only.items()))


def mounts_for_run(run: dg.DagsterRun, instance: dg.DagsterInstance) -> tuple[RunMount, ...]:
    """What the launchers call: the run's mounts (``run_mounts``) under the registry in use."""
    from flux_pipelines.contracts.registry import load_registry

    return run_mounts(run_facts(run, instance), load_registry())
