"""Offline checks of deploy/: what can break there without a Docker engine or a cluster.

Nothing here builds the image, starts compose or installs the chart (deploy/README.md, "Not
run here"). What is checked instead: the files parse; they agree with each other and with
the project (ports, service names, paths, the code location, the instance settings in
dagster.yaml); every command the containers run exists with the flags given; the image's
entry module loads; the Kubernetes manifests and the Kubernetes objects inside the Helm
values validate against the Kubernetes JSON schemas bundled by kubernetes-validate; the
Helm values use only keys of the official chart's values schema; and every runtime package
in uv.lock has a wheel for the image's Python.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as k8s_validate
from packaging.markers import Marker
from packaging.specifiers import SpecifierSet
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
FLUX_IMAGE_SERVICES = ("code-server", "webserver", "webserver-read-only", "daemon")
# The oldest and the newest Kubernetes the manifests are written for.
K8S_VERSIONS = ("1.30", "1.37")
# deploy/k8s/*.yaml refer to objects the chart names after the release.
RELEASE = "dagster"
NAMESPACE = "flux"


# ---------------------------------------------------------------------------------------
# Loading


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@functools.cache
def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "docker-compose.yaml")


@functools.cache
def helm() -> dict[str, Any]:
    return load_yaml(DEPLOY / "helm" / "values.yaml")


@functools.cache
def instance() -> dict[str, Any]:
    return load_yaml(ROOT / "dagster.yaml")


@functools.cache
def compose_instance() -> dict[str, Any]:
    """The compose deployment's instance (mounted over the image's dagster.yaml)."""
    return load_yaml(DEPLOY / "dagster.docker.yaml")


def run_launcher_config() -> dict[str, Any]:
    """The config of Flux's run launcher in the Helm values (a CustomRunLauncher's)."""
    return helm()["runLauncher"]["config"]["customRunLauncher"]["config"]


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@functools.cache
def k8s_docs() -> tuple[tuple[str, dict[str, Any]], ...]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        docs += [(path.name, doc) for doc in yaml.safe_load_all(text) if doc]
    return tuple(docs)


def k8s_doc(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in deploy/k8s, found {len(found)}"
    return found[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def dockerfile_cmd() -> list[str]:
    cmds = [json.loads(args) for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    assert cmds, "deploy/Dockerfile has no CMD"
    return cmds[-1]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


def option(argv: list[str], *names: str) -> str:
    """The value after the first of these flags in argv."""
    for i, arg in enumerate(argv):
        if arg in names:
            return argv[i + 1]
    raise AssertionError(f"none of {names} in {argv}")


def service_command(name: str) -> list[str]:
    """What a compose service runs: its `command`, else the image's CMD."""
    return compose()["services"][name].get("command") or dockerfile_cmd()


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (named volume or host path) of a compose service, from the
    short (`source:target[:ro]`) or the long (mapping) syntax."""
    result = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            result[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            result[target] = source
    return result


def env_names_read_by(config: Any) -> Iterator[str]:
    """Every `env: NAME` in a Dagster config tree."""
    if isinstance(config, dict):
        if set(config) == {"env"}:
            yield config["env"]
        for value in config.values():
            yield from env_names_read_by(value)
    elif isinstance(config, list):
        for item in config:
            yield from env_names_read_by(item)


# ---------------------------------------------------------------------------------------
# docker compose


def test_compose_has_the_services() -> None:
    assert set(compose()["services"]) == {
        "flux-home-init",
        "postgres",
        "code-server",
        "webserver",
        "webserver-read-only",
        "daemon",
        "oauth2-proxy",
        "oauth2-proxy-viewers",
        "intake",
        "metrics",
    }


def test_only_the_proxies_and_the_intake_publish_a_host_port() -> None:
    """The webservers have no login: reachable only through oauth2-proxy."""
    published = {name for name, svc in compose()["services"].items() if svc.get("ports")}
    assert published == {"oauth2-proxy", "oauth2-proxy-viewers", "intake"}
    assert "ports" not in compose()["services"]["webserver"]


def test_proxy_upstream_is_the_webserver() -> None:
    env = compose()["services"]["oauth2-proxy"]["environment"]
    upstream = urlparse(env["OAUTH2_PROXY_UPSTREAMS"])
    webserver = service_command("webserver")
    assert upstream.hostname == "webserver"
    assert upstream.port == int(option(webserver, "-p", "--port"))
    assert option(webserver, "-h", "--host") == "0.0.0.0"
    assert str(upstream.port) in compose()["services"]["webserver"]["expose"]


def test_flux_services_share_dagster_storage_and_the_runs_mount_flux_home() -> None:
    """Runs write FLUX_HOME in the code server; the UI reads compute logs from storage.
    (Which folders of FLUX_HOME the other services get: test_deploy_isolation.py.)"""
    for name in FLUX_IMAGE_SERVICES:
        service = compose()["services"][name]
        env = service["environment"]
        mounted = mounts(service)
        assert mounted.get(env["DAGSTER_HOME"] + "/storage") == "dagster-storage", name
        assert service["image"] == compose()["services"]["code-server"]["image"], name
    code_server = compose()["services"]["code-server"]
    assert mounts(code_server)[code_server["environment"]["FLUX_HOME"]] == "flux-home"
    assert {"flux-home", "dagster-storage"} <= set(compose()["volumes"])
    # The runs' writer mounts FLUX_HOME read-write (only landing/ read-only over it:
    # test_deploy_isolation.py).
    code_server_volumes = compose()["services"]["code-server"]["volumes"]
    assert "flux-home:/var/lib/flux" in code_server_volumes


def test_flux_services_set_every_env_var_the_instance_reads() -> None:
    """dagster.yaml reads DAGSTER_PG_* through `env:`; a missing one fails at start."""
    needed = set(env_names_read_by(instance()))
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD"} <= needed
    for name in FLUX_IMAGE_SERVICES:
        env = compose()["services"][name]["environment"]
        assert needed <= set(env), f"{name} lacks {needed - set(env)}"
        assert env["DAGSTER_PG_HOST"] == "postgres"


def test_services_wait_for_a_healthy_postgres() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in FLUX_IMAGE_SERVICES:
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name, service in services.items():
        for target, condition in service.get("depends_on", {}).items():
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}"


def test_workspace_points_at_the_code_server() -> None:
    workspace = load_yaml(DEPLOY / "workspace.docker.yaml")
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    assert server["host"] in compose()["services"]
    assert server["host"] == "code-server"
    assert server["port"] == int(option(service_command("code-server"), "-p", "--port"))
    assert server["location_name"] == pyproject()["tool"]["dagster"]["code_location_name"]
    health = compose()["services"]["code-server"]["healthcheck"]["test"]
    assert int(option(health, "-p", "--port")) == server["port"]


def test_webserver_and_daemon_read_the_mounted_workspace() -> None:
    for name in ("webserver", "webserver-read-only", "daemon"):
        service = compose()["services"][name]
        workspace_path = option(service["command"], "-w", "--workspace")
        source = mounts(service)[workspace_path]
        assert (DEPLOY / source).resolve() == (DEPLOY / "workspace.docker.yaml").resolve()


# ---------------------------------------------------------------------------------------
# The image


def test_dockerfile_base_python_satisfies_requires_python() -> None:
    (base,) = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    default = dict(
        re.findall(r"(\w+)=(\S+)", " ".join(a for k, a in dockerfile_instructions() if k == "ARG"))
    )
    image = default[base.strip("${}")] if base.startswith("$") else base
    version = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", image.strip('"'))
    assert version, image
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert f"{version.group(1)}.0" in requires


def test_dockerfile_copies_existing_paths_the_build_context_keeps() -> None:
    ignore = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in ignore:
            negated = pattern.startswith("!")
            if fnmatch(path, pattern.lstrip("!")):
                verdict = not negated
        return verdict

    copies = [args.split() for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for args in copies:
        sources = [a for a in args[:-1] if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source.rstrip("/")), f"COPY {source}: excluded from the context"


def test_image_command_module_defines_the_code_location() -> None:
    import dagster as dg

    module = importlib.import_module(option(dockerfile_cmd(), "-m", "--module-name"))
    assert isinstance(module.defs, dg.Definitions)
    assert module.defs.resolve_all_job_defs()


def test_instance_run_launcher_is_importable() -> None:
    """Every Flux container loads dagster.yaml (compose: dagster.docker.yaml; Helm: the
    chart's, from the values), whose run launcher is Flux code."""
    from dagster._core.launcher import RunLauncher
    from dagster_docker import DockerRunLauncher
    from dagster_k8s import K8sRunLauncher

    custom = helm()["runLauncher"]["config"]["customRunLauncher"]
    for launcher, base in (
        (instance()["run_launcher"], RunLauncher),
        (compose_instance()["run_launcher"], DockerRunLauncher),
        (custom, K8sRunLauncher),
    ):
        cls = getattr(importlib.import_module(launcher["module"]), launcher["class"])
        assert issubclass(cls, base), launcher


def test_compose_instance_is_the_project_instance_but_for_the_run_launcher() -> None:
    """One source of truth: the compose instance differs from dagster.yaml only in its run
    launcher, which names compose's own network, volume and image; every service that
    loads the instance mounts it."""
    ours, theirs = instance(), compose_instance()
    assert {k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)} == {
        "run_launcher"
    }
    config = theirs["run_launcher"]["config"]
    backend = compose()["networks"]["backend"]
    assert config["networks"] == [backend["name"]] and backend["internal"] is True
    storage = compose()["volumes"]["dagster-storage"]["name"]
    assert config["container_kwargs"]["volumes"] == [
        f"{storage}:{dockerfile_env()['DAGSTER_HOME']}/storage"
    ]
    assert config["flux_home_path"] == dockerfile_env()["FLUX_HOME"]
    assert config["flux_home_host_dir"] == {"env": "FLUX_HOME_HOST_DIR"}
    device = compose()["volumes"]["flux-home"]["driver_opts"]["device"]
    assert device.startswith("${FLUX_HOME_HOST_DIR:?")  # the same host directory
    for name in (*FLUX_IMAGE_SERVICES, "metrics"):
        service = compose()["services"][name]
        assert mounts(service)[dockerfile_env()["DAGSTER_HOME"] + "/dagster.yaml"] == (
            "./dagster.docker.yaml"
        ), name
        assert set(config["env_vars"]) <= set(service["environment"]), name


def test_only_the_daemon_and_the_full_webserver_reach_the_docker_socket() -> None:
    """The run launcher's Docker engine: the daemon starts and checks runs' containers, the
    operators' webserver stops them; nothing else (the socket is root on the host)."""
    socket = "/var/run/docker.sock"
    holders = {n for n, svc in compose()["services"].items() if socket in mounts(svc)}
    assert holders == {"daemon", "webserver"}
    for name in holders:
        assert compose()["services"][name]["group_add"], name
    code_server = compose()["services"]["code-server"]["environment"]
    assert code_server["DAGSTER_CURRENT_IMAGE"] == compose()["services"]["code-server"]["image"]


def container_commands() -> list[list[str]]:
    """Every Dagster command line the containers run, chart-generated ones included."""
    services = compose()["services"]
    commands = [dockerfile_cmd(), services["webserver"]["command"], services["daemon"]["command"]]
    for name in FLUX_IMAGE_SERVICES:
        test = services[name]["healthcheck"]["test"]
        if test[0] == "CMD" and test[1].startswith("dagster"):
            commands.append(test[1:])
    (deployment,) = helm()["dagster-user-deployments"]["deployments"]
    chart_prefix = ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p"]
    commands.append([*chart_prefix, str(deployment["port"]), *deployment["codeServerArgs"]])
    return commands


def test_console_scripts_are_entry_points_of_declared_dependencies() -> None:
    scripts = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
    declared = {
        re.split(r"[=<>\[ ;]", dep, maxsplit=1)[0].lower()
        for dep in pyproject()["project"]["dependencies"]
    }
    programs = {command[0] for command in container_commands()}
    assert programs == {"dagster", "dagster-webserver", "dagster-daemon"}
    for program in programs:
        assert program in scripts, f"{program}: no console script installed"
        assert scripts[program].dist is not None
        assert scripts[program].dist.name.lower() in declared, program


def parse_cli(argv: list[str]) -> None:
    """Parse argv with the program's own click command (no callback runs)."""
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name=argv[0])
    command: click.Command = importlib.import_module(entry_point.module).cli
    args = argv[1:]
    while isinstance(command, click.Group):
        name, *args = args
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"{argv}: no subcommand {name!r}"
        command = sub
    command.make_context(argv[0], list(args))


def test_container_commands_use_flags_the_installed_cli_accepts() -> None:
    # Paths the CLI checks for existence: the repository files compose mounts there.
    bind_mounted = {
        target: str(DEPLOY / source)
        for service in compose()["services"].values()
        for target, source in mounts(service).items()
        if source.startswith("./")
    }
    for argv in container_commands():
        try:
            parse_cli([bind_mounted.get(arg, arg) for arg in argv])
        except click.ClickException as exc:
            pytest.fail(f"{' '.join(argv)}: {exc.format_message()}", pytrace=False)


def test_parse_cli_rejects_an_unknown_flag() -> None:
    with pytest.raises(click.NoSuchOption):
        parse_cli(["dagster", "code-server", "start", "--no-such-flag"])


def locked_runtime_packages() -> dict[str, dict[str, Any]]:
    """uv.lock's packages that `uv sync --no-dev` installs on CPython 3.12, Linux x86_64."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    by_name: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        by_name.setdefault(package["name"], []).append(package)
    env = {
        "python_version": "3.12",
        "python_full_version": "3.12.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    project = pyproject()["project"]["name"]
    found: dict[str, dict[str, Any]] = {}
    todo: list[tuple[dict[str, Any], tuple[str, ...]]] = [({"name": project}, ())]
    seen: set[tuple[str, str | None, tuple[str, ...]]] = set()
    while todo:
        dep, extras = todo.pop()
        key = (dep["name"], dep.get("version"), extras)
        if key in seen:
            continue
        seen.add(key)
        candidates = [p for p in by_name[dep["name"]] if dep.get("version") in (None, p["version"])]
        assert len(candidates) == 1, dep
        package = candidates[0]
        found[package["name"]] = package
        requirements = list(package.get("dependencies", []))
        for extra in extras:
            requirements += package.get("optional-dependencies", {}).get(extra, [])
        for req in requirements:
            if "marker" not in req or Marker(req["marker"]).evaluate(env):
                todo.append((req, tuple(sorted(req.get("extra", [])))))
    del found[project]
    return found


# Packages published as a source archive only that build without a compiler: one pure-Python
# module each (uv builds the wheel with setuptools in the image). Anything else must have a
# wheel.
PURE_PYTHON_SDISTS = {"bagit"}  # bagit 1.9: bagit.py, the Library of Congress's BagIt tool


def test_every_runtime_package_has_a_wheel_for_the_image_python() -> None:
    """python:3.12-slim has no compiler: `uv sync --locked --no-dev` must find wheels (or a
    pure-Python source archive, ``PURE_PYTHON_SDISTS``)."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    supported = set(cpython_tags((3, 12), abis=["cp312", "abi3", "none"], platforms=platforms))
    supported |= set(compatible_tags((3, 12), interpreter="cp312", platforms=platforms))
    packages = locked_runtime_packages()
    assert {"dagster", "dagster-webserver", "dagster-postgres", "duckdb"} <= set(packages)
    assert "pytest" not in packages
    missing = []
    for name, package in packages.items():
        tags = {
            tag
            for wheel in package.get("wheels", [])
            for tag in parse_wheel_filename(wheel["url"].rsplit("/", 1)[-1])[3]
        }
        if not tags & supported and name not in PURE_PYTHON_SDISTS:
            missing.append(f"{name} {package['version']}")
    assert not missing, f"no cp312 manylinux x86_64 wheel: {missing}"


# ---------------------------------------------------------------------------------------
# Kubernetes schemas (bundled by kubernetes-validate, no network)


@functools.cache
def k8s_registry(version: str) -> Registry:
    definitions = k8s_validate.schema_contents(
        f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version
    )
    return Resource.from_contents(definitions) @ Registry()


@functools.cache
def k8s_definitions(version: str) -> dict[str, Any]:
    return k8s_registry(version).contents("https://kubernetes.io/api/_definitions.json")["$defs"]


def validate_k8s(obj: Any, definition: str, version: str) -> None:
    """Validate one object against a Kubernetes type (strict: unknown fields fail)."""
    schema = {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{definition}"}
    jsonschema.Draft202012Validator(schema, registry=k8s_registry(version)).validate(obj)


def k8s_definition_of(doc: dict[str, Any]) -> str:
    """The schema definition of a manifest: io.k8s.api.<group>.<version>.<Kind>."""
    group, _, version = doc["apiVersion"].rpartition("/")
    return f"io.k8s.api.{group.split('.')[0] or 'core'}.{version}.{doc['kind']}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_against_kubernetes_schemas(version: str) -> None:
    kinds = set()
    for filename, doc in k8s_docs():
        where = f"{filename} {doc['kind']}/{doc['metadata']['name']}"
        definition = k8s_definition_of(doc)
        assert definition in k8s_definitions(version), f"{where}: no {doc['apiVersion']} here"
        try:
            validate_k8s(doc, definition, version)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where}: {path}: {exc.message}", pytrace=False)
        assert doc["metadata"].get("namespace") == NAMESPACE, filename
        kinds.add(doc["kind"])
    expected = {"Deployment", "Service", "Ingress", "PodDisruptionBudget"}
    assert expected | {"PersistentVolumeClaim", "NetworkPolicy"} <= kinds


def test_schema_check_catches_a_misspelt_field_and_a_removed_api() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s({"requests": {"cpu": "1"}, "limit": {"cpu": "2"}}, RESOURCES, "1.37")
    old_pdb = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget"}
    assert k8s_definition_of(old_pdb) not in k8s_definitions("1.30")


def test_manifests_inline_no_secret() -> None:
    for filename, doc in k8s_docs():
        assert doc["kind"] != "Secret", filename
        if doc["kind"] == "ConfigMap":
            for key in doc["data"]:
                assert not re.search(r"SECRET|PASSWORD|TOKEN", key), f"{filename}: {key}"
        for container in pod_containers(doc):
            for var in container.get("env", []):
                if re.search(r"SECRET|PASSWORD|TOKEN|CLIENT_ID", var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), var["name"]


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] not in {"Deployment", "StatefulSet", "Job"}:
        return []
    return doc["spec"]["template"]["spec"]["containers"]


CPU = {"m": 0.001, "": 1.0}
MEMORY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9, "": 1.0}


def quantity(value: str | int, units: dict[str, float]) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match and match.group(2) in units, f"not a Kubernetes quantity: {value!r}"
    return float(match.group(1)) * units[match.group(2)]


def assert_requests_within_limits(resources: dict[str, Any], where: str) -> None:
    for resource, units in (("cpu", CPU), ("memory", MEMORY)):
        request = quantity(resources["requests"][resource], units)
        limit = quantity(resources["limits"][resource], units)
        assert 0 < request <= limit, f"{where}: {resource} request {request} > limit {limit}"


def test_k8s_containers_have_resources_and_probes() -> None:
    containers = [(f, c) for f, d in k8s_docs() for c in pod_containers(d)]
    assert containers
    for filename, container in containers:
        assert_requests_within_limits(container["resources"], f"{filename} {container['name']}")
        assert "readinessProbe" in container and "livenessProbe" in container


# ---------------------------------------------------------------------------------------
# Helm values


RESOURCES = "io.k8s.api.core.v1.ResourceRequirements"


def keys(names: str) -> dict[str, None]:
    return dict.fromkeys(names.split())


ANY = None  # a free-form value (a Kubernetes object: validated against its schema below)
IMAGE = {"repository": ANY, "tag": ANY, "pullPolicy": ANY}
TAG_LIMIT = {"key": ANY, "value": {"applyLimitPerUniqueValue": ANY}, "limit": ANY}
THREADS = {"useThreads": ANY, "numWorkers": ANY, "numSubmitWorkers": ANY}
K8S_FIELDS = keys(
    "env envConfigMaps envSecrets nodeSelector affinity tolerations podSecurityContext "
    "securityContext resources readinessProbe livenessProbe startupProbe annotations labels "
    "deploymentLabels volumeMounts volumes initContainerResources schedulerName"
)
# The keys of the official chart's values schema (helm/dagster/schema/schema/charts in
# dagster-io/dagster, pydantic models with extra="forbid", 1.13.x) for the sections Flux sets;
# runMonitoring is a free mapping there, so its keys are the ones the chart's instance
# template (templates/configmap-instance.yaml) reads.
CHART_KEYS: dict[str, Any] = {
    "global": keys(
        "postgresqlSecretName dagsterHome serviceAccountName celeryConfigSecretName "
        "nameOverride fullnameOverride"
    ),
    "generatePostgresqlPasswordSecret": ANY,
    "postgresql": keys(
        "image enabled postgresqlHost postgresqlUsername postgresqlPassword postgresqlDatabase "
        "postgresqlParams postgresqlScheme service"
    ),
    "telemetry": {"enabled": ANY},
    "ingress": {"enabled": ANY},
    "dagsterWebserver": {
        **K8S_FIELDS,
        "replicaCount": ANY,
        "image": IMAGE,
        "nameOverride": ANY,
        "pathPrefix": ANY,
        "service": {"type": ANY, "port": ANY, "annotations": ANY},
        "workspace": ANY,
        "enableReadOnly": ANY,
        "dbStatementTimeout": ANY,
        "dbPoolRecycle": ANY,
        "logLevel": ANY,
        "checkDbReadyInitContainer": ANY,
    },
    "dagster-user-deployments": {
        "enabled": ANY,
        "enableSubchart": ANY,
        "imagePullSecrets": ANY,
        "deployments": {
            **K8S_FIELDS,
            "name": ANY,
            "image": IMAGE,
            "dagsterApiGrpcArgs": ANY,
            "codeServerArgs": ANY,
            "includeConfigInLaunchedRuns": {"enabled": ANY},
            "port": ANY,
        },
    },
    "runLauncher": {
        "type": ANY,
        "config": {
            # module, class and a free config (checked against the launcher's own schema by
            # test_run_isolation_launchers.py, which builds the launcher from it)
            "customRunLauncher": {"module": ANY, "class": ANY, "config": ANY},
            "k8sRunLauncher": keys(
                "image imagePullPolicy jobNamespace loadInclusterConfig kubeconfigFile "
                "envConfigMaps envSecrets envVars volumeMounts volumes labels "
                "failPodOnRunFailure resources schedulerName securityContext"
            )
            | {
                "runK8sConfig": keys(
                    "containerConfig podSpecConfig podTemplateSpecMetadata jobSpecConfig "
                    "jobMetadata"
                )
            },
        },
    },
    "dagsterDaemon": {
        **K8S_FIELDS,
        "enabled": ANY,
        "image": IMAGE,
        "heartbeatTolerance": ANY,
        "logFormat": ANY,
        "checkDbReadyInitContainer": ANY,
        "runCoordinator": {
            "enabled": ANY,
            "type": ANY,
            "config": {
                "queuedRunCoordinator": {
                    "maxConcurrentRuns": ANY,
                    "tagConcurrencyLimits": TAG_LIMIT,
                    "dequeueIntervalSeconds": ANY,
                    "dequeueNumWorkers": ANY,
                    "dequeueUseThreads": ANY,
                    "blockOpConcurrencyLimitedRuns": ANY,
                }
            },
        },
        "runMonitoring": keys(
            "enabled startTimeoutSeconds cancelTimeoutSeconds maxResumeRunAttempts "
            "pollIntervalSeconds freeSlotsAfterRunEndSeconds"
        ),
        "runRetries": keys("enabled maxRetries retryOnAssetOrOpFailure"),
        "sensors": THREADS,
        "schedules": THREADS,
        "backfills": THREADS,
    },
    "concurrency": {
        "enabled": ANY,
        "pools": keys("defaultLimit granularity opGranularityRunBuffer"),
        "runs": {"maxConcurrentRuns": ANY, "tagConcurrencyLimits": TAG_LIMIT},
    },
}


def unknown_keys(value: Any, spec: Any, path: str = "") -> Iterator[str]:
    if spec is ANY:
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from unknown_keys(item, spec, f"{path}[{i}]")
        return
    if not isinstance(value, dict):
        return
    for key, sub in value.items():
        if key not in spec:
            yield f"{path}.{key}".lstrip(".")
        else:
            yield from unknown_keys(sub, spec[key], f"{path}.{key}")


def test_helm_values_use_only_chart_keys() -> None:
    assert list(unknown_keys(helm(), CHART_KEYS)) == []
    # The check itself notices a misspelt key.
    queued = {"maxConcurentRuns": 1}
    typo = {"dagsterDaemon": {"runCoordinator": {"config": {"queuedRunCoordinator": queued}}}}
    assert list(unknown_keys(typo, CHART_KEYS)) == [
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurentRuns"
    ]


def test_helm_uses_k8s_run_launcher_queue_and_no_telemetry() -> None:
    values = helm()
    assert values["runLauncher"]["type"] == "CustomRunLauncher"
    assert values["runLauncher"]["config"]["customRunLauncher"]["class"] == "FluxK8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    # The chart fails when run limits are set both here and under concurrency.runs.
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert "tagConcurrencyLimits" not in queued and "maxConcurrentRuns" not in queued
    assert values["telemetry"]["enabled"] is False
    assert instance()["telemetry"]["enabled"] is False
    assert values["ingress"]["enabled"] is False
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"


def test_helm_concurrency_is_the_instance_concurrency() -> None:
    """One source of truth: the chart's dagster.yaml must limit runs as the project's does."""
    ours = instance()["concurrency"]
    chart = helm()["concurrency"]
    assert chart["enabled"] is True
    assert chart["runs"]["tagConcurrencyLimits"] == [
        {"key": limit["key"], "value": limit["value"], "limit": limit["limit"]}
        for limit in ours["runs"]["tag_concurrency_limits"]
    ]
    assert [limit["key"] for limit in chart["runs"]["tagConcurrencyLimits"]] == ["agency"]
    assert chart["pools"] == {
        "defaultLimit": ours["pools"]["default_limit"],
        "granularity": ours["pools"]["granularity"],
    }
    assert chart["runs"]["maxConcurrentRuns"] >= ours["runs"]["max_concurrent_runs"]


def test_helm_monitoring_and_retries_are_the_instance_ones() -> None:
    daemon = helm()["dagsterDaemon"]
    monitoring, ours = daemon["runMonitoring"], instance()["run_monitoring"]
    assert monitoring["enabled"] is ours["enabled"] is True
    assert monitoring["maxResumeRunAttempts"] == ours["max_resume_run_attempts"]
    assert monitoring["freeSlotsAfterRunEndSeconds"] == ours["free_slots_after_run_end_seconds"]
    assert monitoring["startTimeoutSeconds"] >= ours["start_timeout_seconds"]
    retries, ours = daemon["runRetries"], instance()["run_retries"]
    assert retries == {
        "enabled": ours["enabled"],
        "maxRetries": ours["max_retries"],
        "retryOnAssetOrOpFailure": ours["retry_on_asset_or_op_failure"],
    }


def test_helm_postgres_matches_the_instance() -> None:
    pg = helm()["postgresql"]
    ours = instance()["storage"]["postgres"]["postgres_db"]
    assert pg["enabled"] is False
    assert pg["postgresqlScheme"] == ours["scheme"]
    assert "postgresqlPassword" not in pg
    assert helm()["generatePostgresqlPasswordSecret"] is False
    assert helm()["global"]["postgresqlSecretName"]
    assert helm()["global"]["dagsterHome"] == dockerfile_env()["DAGSTER_HOME"]


def helm_k8s_objects() -> Iterator[tuple[str, str, Any]]:
    """(where, Kubernetes type, object) for every Kubernetes object in the Helm values."""
    values = helm()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    config = run_launcher_config()
    launcher = {  # dagster-k8s's snake_case names, as the chart's own fields
        "resources": config["resources"],
        "securityContext": config["security_context"],
        "volumes": config["volumes"],
        "volumeMounts": config["volume_mounts"],
    }
    sections = {
        "dagsterWebserver": values["dagsterWebserver"],
        "dagsterDaemon": values["dagsterDaemon"],
        "user deployment": deployment,
        "k8sRunLauncher": launcher,
    }
    core = "io.k8s.api.core.v1."
    types = {
        "resources": "ResourceRequirements",
        "securityContext": "SecurityContext",
        "podSecurityContext": "PodSecurityContext",
    }
    lists = {
        "volumes": "Volume",
        "volumeMounts": "VolumeMount",
        "env": "EnvVar",
        "envSecrets": "SecretEnvSource",
    }
    for where, section in sections.items():
        for key, kind in types.items():
            if key in section:
                yield f"{where}.{key}", core + kind, section[key]
        for key, kind in lists.items():
            for item in section.get(key, []):
                yield f"{where}.{key}", core + kind, item


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_helm_kubernetes_objects_validate(version: str) -> None:
    checked = set()
    for where, kind, obj in helm_k8s_objects():
        try:
            validate_k8s(obj, kind, version)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message}", pytrace=False)
        checked.add(where)
    assert {"k8sRunLauncher.resources", "user deployment.volumes"} <= checked


def test_helm_resources_have_requests_within_limits() -> None:
    resources = [(w, o) for w, kind, o in helm_k8s_objects() if kind == RESOURCES]
    assert {w for w, _ in resources} >= {
        "dagsterWebserver.resources",
        "dagsterDaemon.resources",
        "user deployment.resources",
        "k8sRunLauncher.resources",
    }
    for where, obj in resources:
        assert_requests_within_limits(obj, where)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def unknown_k8s_fields(obj: dict[str, Any], definition: str, version: str) -> Iterator[str]:
    """dagster-k8s takes snake_case field names: each must be a field of the type."""
    schema = k8s_definitions(version)[definition]
    for key, value in obj.items():
        field = schema.get("properties", {}).get(camel(key))
        if field is None:
            yield f"{definition}.{key}"
        elif isinstance(value, dict) and field.get("$ref", "").startswith("#/$defs/"):
            yield from unknown_k8s_fields(value, field["$ref"].rsplit("/", 1)[-1], version)


def test_helm_run_k8s_config_names_kubernetes_fields() -> None:
    config = run_launcher_config()["run_k8s_config"]
    targets = {
        "pod_spec_config": "io.k8s.api.core.v1.PodSpec",
        "pod_template_spec_metadata": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "job_spec_config": "io.k8s.api.batch.v1.JobSpec",
        "container_config": "io.k8s.api.core.v1.Container",
        "job_metadata": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    }
    for version in K8S_VERSIONS:
        for section, obj in config.items():
            assert list(unknown_k8s_fields(obj, targets[section], version)) == [], section
    assert list(unknown_k8s_fields({"backof_limit": 0}, targets["job_spec_config"], "1.37"))


def test_helm_code_location_is_the_image_and_flux_home() -> None:
    cmd, env = dockerfile_cmd(), dockerfile_env()
    (deployment,) = helm()["dagster-user-deployments"]["deployments"]
    assert deployment["name"] == pyproject()["tool"]["dagster"]["code_location_name"]
    assert option(deployment["codeServerArgs"], "-m") == option(cmd, "-m")
    assert deployment["port"] == int(option(cmd, "-p"))
    deployment_env = {var["name"]: var["value"] for var in deployment["env"]}
    launcher = run_launcher_config()
    launcher_env = dict(var.split("=", 1) for var in launcher["env_vars"])
    pvc = k8s_doc("PersistentVolumeClaim", "flux-home")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for where, section_env in (("user deployment", deployment_env), ("run pods", launcher_env)):
        for name in ("FLUX_HOME", "FLUX_CONTRACTS_DIR"):
            assert section_env[name] == env[name], f"{where}: {name}"

    def claims(volumes: list[dict[str, Any]]) -> dict[str, str]:
        return {v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in volumes if "persistentVolumeClaim" in v}  # fmt: skip

    mounted = {m["mountPath"]: m["name"] for m in deployment["volumeMounts"]}
    assert claims(deployment["volumes"])[mounted[env["FLUX_HOME"]]] == pvc["metadata"]["name"]
    # Run pods: no mount of their own; the launcher mounts the run's folders of this volume
    # at this path (test_run_isolation_launchers.py).
    assert launcher["volume_mounts"] == []
    assert claims(launcher["volumes"])[launcher["flux_home_volume"]] == pvc["metadata"]["name"]
    assert launcher["flux_home_path"] == env["FLUX_HOME"]
    assert launcher["job_namespace"] == NAMESPACE
    # What the chart fills in for its own K8sRunLauncher, named here for release `dagster`.
    assert launcher["instance_config_map"] == f"{RELEASE}-instance"
    assert launcher["postgres_password_secret"] == helm()["global"]["postgresqlSecretName"]
    assert launcher["dagster_home"] == helm()["global"]["dagsterHome"]
    assert launcher["service_account_name"] == RELEASE


def test_readme_installs_the_pinned_chart_as_the_expected_release() -> None:
    """Chart version, image tags and the dagster pin are one version."""
    dagster_pin = next(
        dep.split("==")[1] for dep in pyproject()["project"]["dependencies"] if "dagster==" in dep
    )
    assert importlib.metadata.version("dagster") == dagster_pin
    for path in (DEPLOY / "README.md", DEPLOY / "helm" / "values.yaml"):
        text = path.read_text(encoding="utf-8")
        installs = re.findall(r"helm upgrade --install (\S+) dagster/dagster([^\n]*)", text)
        assert installs, path
        for release, rest in installs:
            assert release == RELEASE, path
            assert re.search(rf"--version {re.escape(dagster_pin)}\b", rest), path
    # The webservers and the daemon run the Flux image: they load the instance, which names
    # Flux's run launcher (its dagster is the pinned one: uv.lock).
    (deployment,) = helm()["dagster-user-deployments"]["deployments"]
    for section in ("dagsterWebserver", "dagsterDaemon"):
        assert helm()[section]["image"] == deployment["image"], section


# ---------------------------------------------------------------------------------------
# The proxy and the disruption budgets on Kubernetes


WEBSERVER_LABELS = {
    "app.kubernetes.io/name": "dagster",
    "app.kubernetes.io/instance": RELEASE,
    "component": "dagster-webserver",
}


def test_auth_proxy_fronts_the_chart_webserver_service() -> None:
    service_port = helm()["dagsterWebserver"]["service"]["port"]
    config = k8s_doc("ConfigMap", "oauth2-proxy")["data"]
    upstream = urlparse(config["OAUTH2_PROXY_UPSTREAMS"])
    assert upstream.hostname.split(".")[:2] == [f"{RELEASE}-webserver", NAMESPACE]
    assert upstream.port == service_port
    deployment = k8s_doc("Deployment", "oauth2-proxy")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] >= 2
    (container,) = pod["spec"]["containers"]
    assert config["OAUTH2_PROXY_HTTP_ADDRESS"].endswith(
        f":{container['ports'][0]['containerPort']}"
    )
    assert {ref["configMapRef"]["name"] for ref in container["envFrom"]} == {"oauth2-proxy"}
    service = k8s_doc("Service", "oauth2-proxy")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (rule,) = k8s_doc("Ingress", "flux")["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}


def test_only_the_proxy_may_reach_the_webserver_pods() -> None:
    policy = k8s_doc("NetworkPolicy", "dagster-webserver-from-proxy-only")["spec"]
    assert policy["podSelector"]["matchLabels"] == WEBSERVER_LABELS
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    proxy_pod = k8s_doc("Deployment", "oauth2-proxy")["spec"]["template"]["metadata"]
    assert source["podSelector"]["matchLabels"].items() <= proxy_pod["labels"].items()
    assert [port["port"] for port in rule["ports"]] == [
        helm()["dagsterWebserver"]["service"]["port"]
    ]


def test_disruption_budgets_select_the_chart_pods() -> None:
    webserver = k8s_doc("PodDisruptionBudget", "dagster-webserver")["spec"]
    assert webserver["selector"]["matchLabels"] == WEBSERVER_LABELS
    assert webserver["minAvailable"] < helm()["dagsterWebserver"]["replicaCount"]
    # A singleton with minAvailable 1 would block every drain of its node.
    daemon = k8s_doc("PodDisruptionBudget", "dagster-daemon")["spec"]
    assert "minAvailable" not in daemon and daemon["maxUnavailable"] >= 1
    assert daemon["selector"]["matchLabels"]["component"] == "dagster-daemon"
    (deployment,) = helm()["dagster-user-deployments"]["deployments"]
    user_code = k8s_doc("PodDisruptionBudget", f"dagster-user-deployments-{deployment['name']}")
    assert user_code["spec"]["selector"]["matchLabels"]["deployment"] == deployment["name"]
    assert "minAvailable" not in user_code["spec"]


def test_run_pods_are_not_evicted_while_running() -> None:
    """Job pods take only an integer minAvailable: at least the most runs at once."""
    runs = k8s_doc("PodDisruptionBudget", "flux-run-workers")["spec"]
    assert isinstance(runs["minAvailable"], int)
    assert runs["minAvailable"] >= helm()["concurrency"]["runs"]["maxConcurrentRuns"]
    labels = runs["selector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "run_worker"
    assert labels["dagster/code-location"] == pyproject()["tool"]["dagster"]["code_location_name"]
