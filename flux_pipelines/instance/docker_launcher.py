"""dagster-docker's run launcher, giving each run's container only its run's folders of the home.

Under docker compose a run used to be a process of the code-server container, which had
to mount every agency's folders read-write. This launcher starts one container per run
(Dagster's DockerRunLauncher) and bind-mounts into it exactly the folders
``access/run_pods.mounts_for_run`` names, as sub-folders of the home's host directory
(``flux_home_host_dir``: the folder compose's ``flux-home`` volume binds), at the run's
FLUX_HOME (``flux_home_path``). An unclassifiable run is refused, never given the whole home.

Any other volume of the launcher's ``container_kwargs`` (the compute logs' volume) is kept;
one that reaches the home (its source inside the host directory, or its target inside the
run's FLUX_HOME) is replaced by the run's own mounts; ``volumes_from``, ``mounts`` and
``privileged`` are refused: each would bring back what the mounts leave out.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterRun, Field, StringSource
from dagster_docker import DockerRunLauncher
from dagster_docker.container_context import DockerContainerContext

from flux_pipelines.access.run_pods import CreatesRunContainers, RunMount, absolute_setting
from flux_pipelines.errors import ConfigurationError

HOME_SETTINGS = {
    "flux_home_host_dir": Field(
        StringSource,
        description="The host directory holding FLUX_HOME (what compose's flux-home binds).",
    ),
    "flux_home_path": Field(StringSource, description="FLUX_HOME inside the run's container."),
}
REFUSED_KWARGS = ("volumes_from", "mounts", "privileged")


def _absolute(path: str, setting: str) -> str:
    return absolute_setting(
        path, setting, "the compose instance (deploy/dagster.docker.yaml, run_launcher.config)"
    )


def docker_binds(mounts: Sequence[RunMount], *, host_dir: str, home: str) -> list[str]:
    """``mounts`` as ``<host_dir>/<sub>:<home>/<sub>:ro|rw`` bind specifications."""
    host, root = _absolute(host_dir, "flux_home_host_dir"), _absolute(home, "flux_home_path")
    return [
        f"{host}/{m.sub_path}:{root}/{m.sub_path}:{'ro' if m.read_only else 'rw'}" for m in mounts
    ]


def _inside(path: str, root: str) -> bool:
    path = posixpath.normpath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _as_specs(volumes: Any) -> list[str]:
    """docker-py's ``volumes`` (a list of ``src:dst[:mode]`` or a ``{src: {bind, mode}}``
    mapping) as a list of specifications."""
    if isinstance(volumes, Mapping):
        return [f"{src}:{v['bind']}:{v.get('mode', 'rw')}" for src, v in volumes.items()]
    return [str(v) for v in volumes or []]


def other_volumes(container_kwargs: Mapping[str, Any], *, host_dir: str, home: str) -> list[str]:
    """The launcher's volumes that do not reach the home; refuses what would bypass them."""
    refused = [k for k in REFUSED_KWARGS if container_kwargs.get(k)]
    if refused:
        raise ConfigurationError(
            f"run launcher container_kwargs {', '.join(refused)}: refused, each would give a run "
            "more of the home than its own folders; remove them (deploy/dagster.docker.yaml)"
        )
    host, root = _absolute(host_dir, "flux_home_host_dir"), _absolute(home, "flux_home_path")
    kept = []
    for spec in _as_specs(container_kwargs.get("volumes")):
        source, _, rest = spec.partition(":")
        target = rest.split(":", 1)[0]
        if not (_inside(target, root) or (source.startswith("/") and _inside(source, host))):
            kept.append(spec)
    return kept


class FluxDockerRunLauncher(CreatesRunContainers, DockerRunLauncher):
    """DockerRunLauncher whose run containers mount only their run's folders of FLUX_HOME."""

    def __init__(self, *, flux_home_host_dir: str, flux_home_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flux_home_host_dir = flux_home_host_dir
        self.flux_home_path = flux_home_path

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {**super().config_type(), **HOME_SETTINGS}  # type: ignore[no-untyped-call]

    def _launch_container_with_command(
        self, run: DagsterRun, docker_image: str, command: Sequence[str]
    ) -> None:
        """Where launch and resume create the run's container (dagster-docker): its
        context is read inside, with the run's own mounts."""
        with self.creating_container_for(run):
            super()._launch_container_with_command(run, docker_image, command)  # type: ignore[no-untyped-call]

    def get_container_context(self, dagster_run: DagsterRun) -> DockerContainerContext:
        """dagster-docker's context (launcher and code location merged), its volumes the
        run's own mounts of the home (``mounts_for_lookup``: an unclassifiable run is
        refused when its container is created, and given none when it is only looked up,
        as terminate and health checks do for the client) plus the launcher's volumes
        elsewhere."""
        context = super().get_container_context(dagster_run)
        where = {"host_dir": self.flux_home_host_dir, "home": self.flux_home_path}
        kept = other_volumes(context.container_kwargs, **where)
        binds = docker_binds(self.mounts_for_lookup(dagster_run, self._instance), **where)
        kwargs = {**context.container_kwargs, "volumes": [*kept, *binds]}
        return context._replace(container_kwargs=kwargs)
