"""Write isolation of run pods: what a run of one agency's job mounts in Kubernetes.

The Helm chart's K8sRunLauncher gives every run pod one static list of mounts, the whole
FLUX_HOME read-write, so a run loading agency A could write ``published/B``. An agency's
jobs (ingest, risk) carry the ``dagster-k8s/config`` tag built here, which replaces that
list for their runs with the agency's own folders only (``names.AGENCY_ZONES``: its landing
folder read-only; its warehouse, receipts, published and outbox folders read-write) and the
shared, agency-less folders every run writes (the audit trail and its anchor in ``state/``,
the run's last words in ``run_errors/``).

Replaced, not added to: with ``merge_behavior: SHALLOW`` dagster-k8s (0.29, ``K8sContainer
Context._merge_k8s_config``) replaces each top-level key of ``container_config`` the tag
sets (``volume_mounts`` here) and keeps the launcher's other keys (env, resources, security
context) and its ``volumes`` (the FLUX_HOME claim, which the mounts name). With the default
deep merge the lists would be concatenated and the whole home would stay mounted.

The tag is built only where ``FLUX_RUN_POD_VOLUME`` names that volume (the Helm code
server's environment): on one host (``flux dev``, compose, tests) runs carry no tag. Runs
of no agency job (cross-agency outputs, catalogs, purge, a selection launched from the
asset graph, a cohort job) keep the launcher's list: see deploy/README.md, "Isolation".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.home import FLUX_HOME_ENV
from flux_pipelines.names import AGENCY_ZONES
from flux_pipelines.slugs import check_slug

K8S_CONFIG_TAG = "dagster-k8s/config"  # read by dagster-k8s's K8sRunLauncher
RUN_POD_VOLUME_ENV = "FLUX_RUN_POD_VOLUME"  # the run pods' volume holding FLUX_HOME
RUN_POD_HOME_ENV = "FLUX_RUN_POD_HOME"  # where run pods mount the home; default $FLUX_HOME
AUDIT_ZONE, STATE_ZONE = "audit", "state"  # the trail, and its second anchor (audit/trail.py)


@dataclass(frozen=True)
class RunMount:
    """One folder of the home a run pod mounts (``sub_path`` relative to the home)."""

    sub_path: str
    read_only: bool


def shared_run_zones() -> tuple[RunMount, ...]:
    """Folders of no agency that every run writes: the audit trail, its anchor in state/
    (and the PII key it reads there), the run's last words (``instance/launcher.py``)."""
    from flux_pipelines.instance.launcher import LAST_WORDS_DIR

    return tuple(RunMount(zone, False) for zone in (AUDIT_ZONE, STATE_ZONE, LAST_WORDS_DIR))


def agency_run_mounts(agency_id: str) -> tuple[RunMount, ...]:
    """What a run of ``agency_id``'s job mounts: its own folders, then the shared ones."""
    agency = check_slug(agency_id, "agency")
    own = tuple(RunMount(f"{zone}/{agency}", not writes) for zone, writes in AGENCY_ZONES)
    return own + shared_run_zones()


def agency_run_k8s_config(agency_id: str, *, volume: str, home: str) -> dict[str, Any]:
    """The ``dagster-k8s/config`` value for ``agency_id``'s runs: ``volume`` (a volume of the
    launcher's pod spec) mounted by sub-path at ``home/<sub_path>``."""
    if not home.startswith("/"):
        raise ConfigurationError(
            f"run pods' home {home!r} is not an absolute path: set {RUN_POD_HOME_ENV} (or "
            f"{FLUX_HOME_ENV}) in the code server's environment to where run pods mount it"
        )
    root = home.rstrip("/")
    mounts = [
        {
            "name": volume,
            "mountPath": f"{root}/{m.sub_path}",
            "subPath": m.sub_path,
            "readOnly": m.read_only,
        }
        for m in agency_run_mounts(agency_id)
    ]
    return {"container_config": {"volume_mounts": mounts}, "merge_behavior": "SHALLOW"}


def agency_run_tags(agency_id: str) -> dict[str, str]:
    """Run tags for an agency's jobs: the mounts tag when ``FLUX_RUN_POD_VOLUME`` is set,
    else none. Call it where the job is defined: ``tags={..., **agency_run_tags(id)}``."""
    volume = os.environ.get(RUN_POD_VOLUME_ENV, "").strip()
    if not volume:
        return {}
    home = os.environ.get(RUN_POD_HOME_ENV) or os.environ.get(FLUX_HOME_ENV) or ""
    config = agency_run_k8s_config(agency_id, volume=volume, home=home)
    return {K8S_CONFIG_TAG: json.dumps(config, sort_keys=True, separators=(",", ":"))}
