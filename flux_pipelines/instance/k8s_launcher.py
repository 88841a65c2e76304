"""dagster-k8s's run launcher, giving each run pod only the folders of the home its run needs.

The chart's K8sRunLauncher gives every run pod one static mount list. This one replaces,
for every run it launches or looks up, each mount of the FLUX_HOME volume (from the
launcher's config, the code location or a ``dagster-k8s/config`` run tag) with sub-path
mounts of exactly ``access/run_pods.mounts_for_run``: an agency's run reaches no other
agency's folders, a cross-agency run reads the agencies' published copies read-only, and a
run that cannot be classified is refused (no run gets the whole home). Mounts of another
volume of the same claim are dropped too, so no tag can bring the whole home back.

Configured in the chart as ``runLauncher.type: CustomRunLauncher`` (deploy/helm/values.yaml)
with the K8sRunLauncher's own settings plus ``flux_home_volume`` (the run pods' volume that
holds FLUX_HOME) and ``flux_home_path`` (where the run pod sees it: its FLUX_HOME).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterRun, Field, StringSource
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext

from flux_pipelines.access.run_pods import CreatesRunContainers, RunMount, absolute_setting
from flux_pipelines.errors import ConfigurationError

HOME_SETTINGS = {
    "flux_home_volume": Field(
        StringSource, description="The run pods' volume holding FLUX_HOME (of `volumes`)."
    ),
    "flux_home_path": Field(
        StringSource, description="Where run pods mount the home: their FLUX_HOME."
    ),
}


def k8s_volume_mounts(
    mounts: Sequence[RunMount], *, volume: str, home: str
) -> list[dict[str, Any]]:
    """``mounts`` as sub-path mounts of ``volume`` at ``home/<sub_path>`` (dagster-k8s's
    snake_case form of a V1VolumeMount)."""
    root = absolute_setting(
        home,
        "flux_home_path",
        "deploy/helm/values.yaml (runLauncher.config.customRunLauncher), the run pods' FLUX_HOME",
    ).rstrip("/")
    return [
        {
            "name": volume,
            "mount_path": f"{root}/{m.sub_path}",
            "sub_path": m.sub_path,
            "read_only": m.read_only,
        }
        for m in mounts
    ]


def _claim(volume: Mapping[str, Any]) -> str | None:
    claim = volume.get("persistent_volume_claim") or volume.get("persistentVolumeClaim") or {}
    name = claim.get("claim_name") or claim.get("claimName")
    return str(name) if name else None


def home_volume_names(volumes: Sequence[Mapping[str, Any]], home_volume: str) -> set[str]:
    """``home_volume`` and every other volume of the pod that is the same claim."""
    by_name = {str(v.get("name")): v for v in volumes}
    if home_volume not in by_name:
        raise ConfigurationError(
            f"run launcher flux_home_volume {home_volume!r} is not a volume of the run pods "
            f"({', '.join(sorted(by_name)) or 'none'}): name the volume holding FLUX_HOME "
            "(deploy/helm/values.yaml, runLauncher.config.customRunLauncher.config.volumes)"
        )
    claim = _claim(by_name[home_volume])
    return {home_volume} | {n for n, v in by_name.items() if claim and _claim(v) == claim}


class FluxK8sRunLauncher(CreatesRunContainers, K8sRunLauncher):
    """K8sRunLauncher whose run pods mount only their run's folders of FLUX_HOME."""

    def __init__(self, *, flux_home_volume: str, flux_home_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flux_home_volume = flux_home_volume
        self.flux_home_path = flux_home_path

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {**super().config_type(), **HOME_SETTINGS}  # type: ignore[no-untyped-call]

    def _launch_k8s_job_with_args(
        self, job_name: str, args: Sequence[str] | None, run: DagsterRun
    ) -> None:
        """Where launch and resume create the run pod (dagster-k8s): the pod's context is
        read inside, with the run's own mounts."""
        with self.creating_container_for(run):
            super()._launch_k8s_job_with_args(job_name, args, run)

    def get_container_context_for_run(self, dagster_run: DagsterRun) -> K8sContainerContext:
        """dagster-k8s's context (launcher, code location, run tags merged), every mount of
        the home replaced by the run's own (``mounts_for_lookup``: an unclassifiable run is
        refused when its pod is created, and given no home mount when it is only looked up,
        as terminate and health checks do for its namespace)."""
        context = super().get_container_context_for_run(dagster_run)
        config = context.run_k8s_config
        volumes = config.pod_spec_config.get("volumes") or []
        home = home_volume_names(volumes, self.flux_home_volume)
        kept = [m for m in config.container_config.get("volume_mounts") or []
                if m.get("name") not in home]  # fmt: skip
        mounts = k8s_volume_mounts(
            self.mounts_for_lookup(dagster_run, self._instance),
            volume=self.flux_home_volume,
            home=self.flux_home_path,
        )
        container = {**config.container_config, "volume_mounts": [*kept, *mounts]}
        return context._replace(run_k8s_config=config._replace(container_config=container))
