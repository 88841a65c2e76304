"""Offline checks of the isolation in deploy/: who can reach whom, and who mounts what.

Kubernetes: the NetworkPolicies in deploy/k8s are evaluated here as a CNI would (a
connection needs an egress allow at its source and an ingress allow at its destination once
a policy selects the pod), over every pod Flux runs: the manifests' Deployments and
StatefulSets plus the pods the official chart and the K8sRunLauncher create, with the labels
they put on them. The resulting reachability is compared with the intended one, edge for
edge. Then the roles: the viewers' proxy admits only the viewers' group and forwards only to
the read-only webserver; the intake is behind TLS, holds no secret and mounts only its
folders; the analyst template mounts only its agency's published copies, read-only; the code
server cannot write published/ or warehouse/. Compose: networks stand in for policies, so
the same questions are asked of shared networks, and of each service's mounts and env.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import typer

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines_tests.test_deploy import (
    DEPLOY,
    K8S_VERSIONS,
    NAMESPACE,
    RELEASE,
    ROOT,
    compose,
    helm,
    k8s_definition_of,
    k8s_definitions,
    k8s_doc,
    k8s_docs,
    load_yaml,
    mounts,
    option,
    parse_cli,
    run_launcher_config,
    validate_k8s,
)

NEW_MANIFESTS = (
    "network-policies.yaml",
    "intake.yaml",
    "agency-analyst.yaml",
    "auth-proxy.yaml",
    "metrics.yaml",
)
FLUX_HOME = "/var/lib/flux"
PVC = "flux-home"
PG_SECRET = "dagster-postgresql-secret"
INGRESS_NAMESPACE = "ingress-nginx"


@functools.cache
def access() -> dict[str, Any]:
    return load_yaml(ROOT / "contracts" / "access.yaml")


def group_of(role: str) -> str:
    (group,) = [g for g, r in access()["identity"]["groups"].items() if r == role]
    return group


# ---------------------------------------------------------------------------------------
# Every pod in the namespace, with its labels


@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict[str, str] = field(hash=False)
    namespace: str = NAMESPACE
    ports: tuple[int, ...] = ()


@functools.cache
def pods() -> dict[str, Pod]:
    """The manifests' workloads, then the pods the chart and the run launcher create."""
    found: dict[str, Pod] = {}
    for _, doc in k8s_docs():
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            template = doc["spec"]["template"]
            ports = tuple(
                p["containerPort"]
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            )
            found[doc["metadata"]["name"]] = Pod(
                doc["metadata"]["name"], template["metadata"]["labels"], ports=ports
            )
    values = helm()
    web_port = values["dagsterWebserver"]["service"]["port"]
    chart = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE}
    found["dagster-webserver"] = Pod(
        "dagster-webserver", {**chart, "component": "dagster-webserver"}, ports=(web_port,)
    )
    if values["dagsterWebserver"].get("enableReadOnly"):
        labels = {**chart, "component": "dagster-webserver-read-only"}
        found["dagster-webserver-read-only"] = Pod(
            "dagster-webserver-read-only", labels, ports=(web_port,)
        )
    found["dagster-daemon"] = Pod(
        "dagster-daemon", {**chart, "component": "dagster-daemon", "deployment": "daemon"}
    )
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    found["code-server"] = Pod(
        "code-server",
        {
            "app.kubernetes.io/name": "dagster-user-deployments",
            "app.kubernetes.io/instance": RELEASE,
            "component": "user-deployments",
            "deployment": deployment["name"],
        },
        ports=(deployment["port"],),
    )
    launcher = run_launcher_config()
    found["run-pod"] = Pod(
        "run-pod",
        {
            "app.kubernetes.io/part-of": "dagster",
            "app.kubernetes.io/component": "run_worker",
            "dagster/code-location": deployment["name"],
            **launcher.get("labels", {}),
        },
    )
    return found


# Outside the namespace: the ingress controller and the cluster DNS.
INGRESS_CONTROLLER = Pod(
    "ingress-controller", {"app.kubernetes.io/name": "ingress-nginx"}, namespace=INGRESS_NAMESPACE
)
KUBE_DNS = Pod("kube-dns", {"k8s-app": "kube-dns"}, namespace="kube-system", ports=(53,))
# The cluster's Prometheus, which scrapes the metrics exporter.
PROMETHEUS = Pod("prometheus", {"app.kubernetes.io/name": "prometheus"}, namespace="monitoring")
# Addresses outside the cluster (placeholders in network-policies.yaml, documented there).
POSTGRES = ipaddress.ip_address("10.20.0.5")
API_SERVER = ipaddress.ip_address("10.96.0.1")
IDP = ipaddress.ip_address("203.0.113.10")  # a public address (TEST-NET-3)
CLUSTER_POD = ipaddress.ip_address("10.1.2.3")  # what "the internet" must not include


def policies() -> list[dict[str, Any]]:
    return [d for _, d in k8s_docs() if d["kind"] == "NetworkPolicy"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is evaluated here: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_matches(peer: dict[str, Any], target: Pod | ipaddress.IPv4Address) -> bool:
    if "ipBlock" in peer:
        if isinstance(target, Pod):
            return False
        block = peer["ipBlock"]
        return target in ipaddress.ip_network(block["cidr"]) and not any(
            target in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if isinstance(target, ipaddress.IPv4Address):
        return False
    if "namespaceSelector" in peer:
        ns = {"kubernetes.io/metadata.name": target.namespace}
        if not selects(peer["namespaceSelector"], ns):
            return False
    elif target.namespace != NAMESPACE:
        return False
    return selects(peer.get("podSelector", {}), target.labels)


def port_matches(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    return ports is None or any(p.get("port") == port for p in ports)


def allowed(
    direction: str,
    pod: Pod,
    other: Pod | ipaddress.IPv4Address,
    port: int,
    pols: list[dict[str, Any]],
) -> bool:
    """Whether the policies selecting ``pod`` allow traffic from/to ``other`` on ``port``."""
    if pod.namespace != NAMESPACE:
        return True  # not ours: the other namespaces' policies are not in deploy/
    kind, key, peers = (
        ("Egress", "egress", "to") if direction == "out" else ("Ingress", "ingress", "from")
    )
    selecting = [
        p
        for p in pols
        if kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    return any(
        port_matches(rule, port) and any(peer_matches(peer, other) for peer in rule[peers])
        for policy in selecting
        for rule in policy["spec"].get(key, [])
    )


def connects(
    src: Pod,
    dst: Pod | ipaddress.IPv4Address,
    port: int,
    pols: list[dict[str, Any]] | None = None,
) -> bool:
    """A connection needs the source's egress and (for a pod) the destination's ingress."""
    pols = policies() if pols is None else pols
    if isinstance(dst, Pod):
        return allowed("out", src, dst, port, pols) and allowed("in", dst, src, port, pols)
    return allowed("out", src, dst, port, pols)


def policy_ports() -> set[int]:
    return {
        p["port"]
        for policy in policies()
        for key in ("ingress", "egress")
        for rule in policy["spec"].get(key, [])
        for p in rule.get("ports", [])
    }


# ---------------------------------------------------------------------------------------
# Kubernetes: schemas and policies


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_new_manifests_validate_against_kubernetes_schemas(version: str) -> None:
    seen = set()
    for filename, doc in k8s_docs():
        if filename not in NEW_MANIFESTS:
            continue
        where = f"{filename} {doc['kind']}/{doc['metadata']['name']}"
        definition = k8s_definition_of(doc)
        assert definition in k8s_definitions(version), where
        try:
            validate_k8s(doc, definition, version)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}", pytrace=False)
        assert doc["metadata"]["namespace"] == NAMESPACE, where
        seen.add(filename)
    assert seen == set(NEW_MANIFESTS)


def test_default_deny_covers_every_pod_in_both_directions() -> None:
    (deny,) = [p for p in policies() if p["spec"]["podSelector"] == {}
               and "ingress" not in p["spec"] and "egress" not in p["spec"]]  # fmt: skip
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for pod in pods().values():
        assert selects(deny["spec"]["podSelector"], pod.labels), pod.name
    # With it, a pod no allow names can do nothing but resolve names.
    lonely = Pod("unknown", {"app": "something-new"})
    for port in policy_ports():
        for other in (*pods().values(), INGRESS_CONTROLLER):
            assert not connects(lonely, other, port) and not connects(other, lonely, port)
        assert not connects(lonely, IDP, port) and not connects(lonely, POSTGRES, port)
    assert connects(lonely, KUBE_DNS, 53)


def test_every_allow_names_a_real_workload() -> None:
    """Each selector (of a policy, of a peer) selects at least one pod that exists; peers in
    other namespaces are the ingress controller and kube-dns only."""
    ours = list(pods().values())
    for policy in policies():
        name, spec = policy["metadata"]["name"], policy["spec"]
        if spec["podSelector"]:
            assert any(selects(spec["podSelector"], p.labels) for p in ours), name
        for key, peers in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(key, []):
                assert rule.get(peers), f"{name}: a {key} rule without peers allows everyone"
                assert rule.get("ports"), f"{name}: a {key} rule without ports allows every port"
                for peer in rule[peers]:
                    if "ipBlock" in peer:
                        continue
                    if "namespaceSelector" in peer:
                        outside = (INGRESS_CONTROLLER, KUBE_DNS, PROMETHEUS)
                        assert any(peer_matches(peer, p) for p in outside), f"{name}: {peer}"
                    else:
                        assert any(peer_matches(peer, p) for p in ours), f"{name}: {peer}"


def test_pods_reach_exactly_what_the_design_says() -> None:
    """Every allowed connection between pods (and from the ingress controller), computed
    from the policies, against the intended list."""
    everyone = {**pods(), "ingress-controller": INGRESS_CONTROLLER, "prometheus": PROMETHEUS}
    ports = policy_ports() | {p for pod in everyone.values() for p in pod.ports}
    ports.discard(53)
    reached = {
        (src, dst, port)
        for src, a in everyone.items()
        for dst, b in everyone.items()
        if src != dst and b.namespace == NAMESPACE
        for port in ports
        if connects(a, b, port)
    }
    web = helm()["dagsterWebserver"]["service"]["port"]
    (deployment,) = helm()["dagster-user-deployments"]["deployments"]
    grpc = deployment["port"]
    assert reached == {
        ("ingress-controller", "oauth2-proxy", 4180),
        ("ingress-controller", "oauth2-proxy-viewers", 4180),
        ("ingress-controller", "flux-intake", 8080),
        ("oauth2-proxy", "dagster-webserver", web),
        ("oauth2-proxy-viewers", "dagster-webserver-read-only", web),
        ("dagster-webserver", "code-server", grpc),
        ("dagster-webserver-read-only", "code-server", grpc),
        ("dagster-daemon", "code-server", grpc),
        ("prometheus", "flux-metrics", 9464),
    }


def test_pods_reach_exactly_the_outside_they_need() -> None:
    outside = {"postgres": (POSTGRES, 5432), "api": (API_SERVER, 443), "idp": (IDP, 443)}
    reached = {
        (name, where) for name, pod in pods().items() for where, (address, port) in
        outside.items() if connects(pod, address, port)
    }  # fmt: skip
    dagster = {"dagster-webserver", "dagster-webserver-read-only", "dagster-daemon"}
    assert reached == {
        *((name, "postgres") for name in dagster | {"code-server", "run-pod", "flux-metrics"}),
        ("dagster-webserver", "api"),
        ("dagster-daemon", "api"),
        ("oauth2-proxy", "idp"),
        ("oauth2-proxy-viewers", "idp"),
        ("flux-intake", "idp"),
    }
    # "The internet" for the proxies and the intake excludes the cluster's own addresses.
    for name in ("oauth2-proxy", "oauth2-proxy-viewers", "flux-intake"):
        assert not connects(pods()[name], CLUSTER_POD, 443), name
    assert all(connects(pod, KUBE_DNS, 53) for pod in pods().values())


def test_the_policy_evaluation_catches_a_wrong_allow() -> None:
    """The evaluator above is what the other tests stand on: a policy that lets the viewers'
    proxy reach the full webserver must show up as a connection."""
    leak = {
        "kind": "NetworkPolicy",
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}],
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": 80}]}],
        },
    }
    viewers, full = pods()["oauth2-proxy-viewers"], pods()["dagster-webserver"]
    assert not connects(viewers, full, 80)
    assert connects(viewers, full, 80, [*policies(), leak])


# ---------------------------------------------------------------------------------------
# Kubernetes: the two UIs


def proxy(name: str) -> tuple[dict[str, str], dict[str, Any]]:
    config = k8s_doc("ConfigMap", name)["data"]
    (container,) = k8s_doc("Deployment", name)["spec"]["template"]["spec"]["containers"]
    assert {ref["configMapRef"]["name"] for ref in container["envFrom"]} == {name}
    return config, container


def test_viewers_proxy_admits_only_viewers_and_forwards_only_to_the_read_only_webserver() -> None:
    values = helm()["dagsterWebserver"]
    assert values["enableReadOnly"] is True
    # The chart names the read-only webserver's Service `<release>-webserver-read-only`.
    expected = {
        "oauth2-proxy": (f"{RELEASE}-webserver", group_of("operator")),
        "oauth2-proxy-viewers": (f"{RELEASE}-webserver-read-only", group_of("viewer")),
    }
    cookies = set()
    for name, (service, group) in expected.items():
        config, container = proxy(name)
        upstreams = config["OAUTH2_PROXY_UPSTREAMS"].split(",")
        assert len(upstreams) == 1, name
        upstream = urlparse(upstreams[0])
        assert upstream.hostname.split(".")[:2] == [service, NAMESPACE], name
        assert upstream.port == values["service"]["port"]
        assert config["OAUTH2_PROXY_ALLOWED_GROUPS"] == group, name
        assert config["OAUTH2_PROXY_OIDC_GROUPS_CLAIM"] == access()["identity"]["groups_claim"]
        cookies.add(config["OAUTH2_PROXY_COOKIE_NAME"])
        refs = {var["name"]: var["valueFrom"]["secretKeyRef"] for var in container["env"]}
        cookie_secret = refs["OAUTH2_PROXY_COOKIE_SECRET"]
        cookies.add(f"{cookie_secret['name']}/{cookie_secret['key']}")
        ingress = [
            d for _, d in k8s_docs()
            if d["kind"] == "Ingress"
            and d["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == name
        ]  # fmt: skip
        (ingress_doc,) = ingress
        assert ingress_doc["spec"]["tls"][0]["secretName"], name
    assert len(cookies) == 4, "each proxy has its own cookie name and cookie secret"
    assert group_of("operator") == "flux-operators" and group_of("viewer") == "flux-viewers"


def test_read_only_webserver_has_its_own_disruption_budget() -> None:
    spec = k8s_doc("PodDisruptionBudget", "dagster-webserver-read-only")["spec"]
    assert selects(spec["selector"], pods()["dagster-webserver-read-only"].labels)
    assert not selects(spec["selector"], pods()["dagster-webserver"].labels)
    proxy_pdb = k8s_doc("PodDisruptionBudget", "oauth2-proxy")["spec"]
    assert not selects(proxy_pdb["selector"], pods()["oauth2-proxy-viewers"].labels)


# ---------------------------------------------------------------------------------------
# Kubernetes: the intake, the analysts, the code server, secrets


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    return k8s_doc(kind, name)["spec"]["template"]["spec"]


def home_mounts(spec: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """mountPath -> (subPath, read-only) of every mount of the flux-home PVC."""
    claims = {
        v["name"] for v in spec.get("volumes", [])
        if v.get("persistentVolumeClaim", {}).get("claimName") == PVC
    }  # fmt: skip
    return {
        m["mountPath"]: (m.get("subPath", ""), bool(m.get("readOnly")))
        for c in spec["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] in claims
    }


def secrets_referenced(value: Any) -> Iterator[str]:
    """Every Secret name a pod spec refers to (env, envFrom, volumes)."""
    if isinstance(value, dict):
        for key in ("secretKeyRef", "secretRef"):
            if key in value:
                yield value[key]["name"]
        if "secret" in value:
            yield value["secret"]["secretName"]
        for item in value.values():
            yield from secrets_referenced(item)
    elif isinstance(value, list):
        for item in value:
            yield from secrets_referenced(item)


def flux_cli_parses(argv: list[str]) -> None:
    """Parse a `flux` command line with the installed CLI (typer; no callback runs)."""
    from flux_pipelines.cli.main import app

    assert argv[0] == "flux"
    group = typer.main.get_command(app)
    context = group.make_context("flux", [argv[1]], resilient_parsing=True)
    sub = group.get_command(context, argv[1])
    assert sub is not None, f"flux has no command {argv[1]!r}"
    sub.make_context(argv[1], list(argv[2:]), parent=context)


def test_flux_cli_parse_rejects_an_unknown_flag() -> None:
    with pytest.raises(Exception, match="No such option"):
        flux_cli_parses(["flux", "serve", "--no-such-flag"])


def test_intake_is_behind_tls_with_no_secret_and_only_its_folders() -> None:
    ingress = k8s_doc("Ingress", "flux-intake")["spec"]
    (tls,) = ingress["tls"]
    (rule,) = ingress["rules"]
    assert tls["secretName"] == "flux-intake-tls" and rule["host"] in tls["hosts"]
    service = k8s_doc("Service", "flux-intake")["spec"]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "flux-intake"
    spec = pod_spec("Deployment", "flux-intake")
    assert selects({"matchLabels": service["selector"]}, pods()["flux-intake"].labels)
    (container,) = spec["containers"]
    flux_cli_parses(container["command"])
    assert int(option(container["command"], "--port")) == container["ports"][0]["containerPort"]
    assert option(container["command"], "--home") == FLUX_HOME
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["automountServiceAccountToken"] is False
    config = k8s_doc("ConfigMap", "flux-intake")["data"]
    assert {"FLUX_OIDC_ISSUER", "FLUX_OIDC_AUDIENCE", "FLUX_OIDC_JWKS_URL"} <= set(config)
    assert (
        config["FLUX_OIDC_ISSUER"]
        == k8s_doc("ConfigMap", "oauth2-proxy")["data"]["OAUTH2_PROXY_OIDC_ISSUER_URL"]
    )
    assert config["FLUX_OIDC_AUDIENCE"] == access()["identity"]["audience"]
    assert list(secrets_referenced(spec)) == [], "the intake needs no credential"
    assert home_mounts(spec) == {
        f"{FLUX_HOME}/landing": ("landing", False),
        f"{FLUX_HOME}/state": ("state", False),
        f"{FLUX_HOME}/audit": ("audit", False),
        f"{FLUX_HOME}/outbox": ("outbox", True),
        f"{FLUX_HOME}/published": ("published", True),
        f"{FLUX_HOME}/receipts": ("receipts", True),
    }  # never warehouse/: no working DuckDB file, raw Parquet or model in its reach


def analyst_agency(doc: dict[str, Any]) -> str:
    return doc["metadata"]["labels"]["flux-agency"]


def assert_analyst_workspace(docs: list[dict[str, Any]], agency: str) -> None:
    (workspace,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert analyst_agency(workspace) == agency
    spec = workspace["spec"]["template"]["spec"]
    assert home_mounts(spec) == {
        f"/data/published/{agency}": (f"published/{agency}", True),
        "/data/published/cross_agency": ("published/cross_agency", True),
    }
    claims = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert [c["persistentVolumeClaim"] for c in claims] == [{"claimName": PVC, "readOnly": True}]
    assert list(secrets_referenced(spec)) == []
    assert spec["automountServiceAccountToken"] is False
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    analysts = next(g for g, r in access()["identity"]["groups"].items() if r == "agency_analyst")
    assert [s["name"] for s in binding["subjects"]] == [analysts.format(agency=agency)]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    pod_name = f"{workspace['metadata']['name']}-0"
    assert all(rule["resourceNames"] == [pod_name] for rule in role["rules"])


def test_analyst_template_mounts_only_its_agency_read_only() -> None:
    import yaml

    text = (DEPLOY / "k8s" / "agency-analyst.yaml").read_text(encoding="utf-8")
    docs = [d for d in yaml.safe_load_all(text) if d]
    agency = analyst_agency(docs[0])
    agencies = [a.id for a in load_registry().agencies]
    assert agency in agencies
    assert_analyst_workspace(docs, agency)
    # Stamped for another agency as the file says (sed), it holds for that agency.
    other = next(a for a in agencies if a != agency and agency not in a)
    stamped = [d for d in yaml.safe_load_all(text.replace(agency, other)) if d]
    assert_analyst_workspace(stamped, other)
    # And the check is not blind: a mount of the whole published/ fails it.
    wide = text.replace(f"subPath: published/{agency}", "subPath: published")
    with pytest.raises(AssertionError):
        assert_analyst_workspace([d for d in yaml.safe_load_all(wide) if d], agency)


def test_code_server_cannot_write_published_or_warehouse() -> None:
    """Runs execute in run pods, not in the code server: its landing/, published/,
    warehouse/ and receipts/ are mounted read-only over its (read-write, for the landing
    findings) home."""
    (deployment,) = helm()["dagster-user-deployments"]["deployments"]
    claims = {
        v["name"] for v in deployment["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == PVC
    }  # fmt: skip
    mounted = {m["mountPath"]: m for m in deployment["volumeMounts"] if m["name"] in claims}
    for folder in ("landing", "published", "warehouse", "receipts"):
        mount = mounted[f"{FLUX_HOME}/{folder}"]
        assert mount["subPath"] == folder and mount["readOnly"] is True
    launcher = run_launcher_config()
    assert launcher["labels"]["flux-role"] == "run-worker"


def test_only_dagster_pods_get_the_postgres_secret() -> None:
    """The chart gives the PostgreSQL password to its own pods; no manifest here refers to
    it, and the proxies refer only to their own Secret."""
    for _, doc in k8s_docs():
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        names = set(secrets_referenced(doc["spec"]["template"]["spec"]))
        assert "flux-env" not in names, doc["metadata"]["name"]
        if doc["metadata"]["name"] == "flux-metrics":  # reads Dagster's instance
            assert names == {PG_SECRET}
        elif doc["metadata"]["name"].startswith("oauth2-proxy"):
            assert names == {"oauth2-proxy"}
        else:
            assert names == set(), doc["metadata"]["name"]
    assert helm()["global"]["postgresqlSecretName"] == PG_SECRET


# ---------------------------------------------------------------------------------------
# docker compose


def services() -> dict[str, Any]:
    return compose()["services"]


def home_volume_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """mountPath -> (subpath, read-only) of the flux-home volume in a compose service."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume["source"] == PVC:
                subpath = volume.get("volume", {}).get("subpath", "")
                found[volume["target"]] = (subpath, bool(volume.get("read_only")))
        else:
            source, target, *mode = volume.split(":")
            if source == PVC:
                found[target] = ("", mode == ["ro"])
    return found


def test_compose_networks_stand_in_for_policies() -> None:
    networks = {name: set(svc.get("networks", [])) for name, svc in services().items()}
    assert networks == {
        "flux-home-init": set(),
        "postgres": {"backend"},
        "code-server": {"backend"},
        "webserver": {"backend", "ui-operators"},
        "webserver-read-only": {"backend", "ui-viewers"},
        "daemon": {"backend"},
        "oauth2-proxy": {"edge", "ui-operators"},
        "oauth2-proxy-viewers": {"edge", "ui-viewers"},
        "intake": {"edge"},
        "metrics": {"backend", "metrics"},
    }
    assert services()["flux-home-init"]["network_mode"] == "none"
    declared = compose()["networks"]
    for name in ("backend", "ui-operators", "ui-viewers", "metrics"):
        assert declared[name]["internal"] is True, name
    assert not (declared["edge"] or {}).get("internal")

    def reach(a: str) -> set[str]:
        return {b for b in services() if b != a and networks[a] & networks[b]}

    assert reach("oauth2-proxy-viewers") == {"oauth2-proxy", "intake", "webserver-read-only"}
    assert reach("oauth2-proxy") == {"oauth2-proxy-viewers", "intake", "webserver"}
    assert reach("intake") == {"oauth2-proxy", "oauth2-proxy-viewers"}
    assert "postgres" not in reach("intake") | reach("oauth2-proxy") | reach("oauth2-proxy-viewers")
    # A published port needs a network with a way out; the backend has none.
    for name, svc in services().items():
        if svc.get("ports"):
            assert "edge" in networks[name], name


def test_compose_proxies_and_webservers_pair_by_role() -> None:
    pairs = {
        "oauth2-proxy": ("webserver", group_of("operator")),
        "oauth2-proxy-viewers": ("webserver-read-only", group_of("viewer")),
    }
    for proxy_name, (web, group) in pairs.items():
        env = services()[proxy_name]["environment"]
        upstream = urlparse(env["OAUTH2_PROXY_UPSTREAMS"])
        assert upstream.hostname == web
        assert upstream.port == int(option(services()[web]["command"], "-p", "--port"))
        assert env["OAUTH2_PROXY_ALLOWED_GROUPS"] == group
        assert env["OAUTH2_PROXY_OIDC_GROUPS_CLAIM"] == access()["identity"]["groups_claim"]
    assert "--read-only" in services()["webserver-read-only"]["command"]
    assert "--read-only" not in services()["webserver"]["command"]
    parse_cli(
        [
            str(DEPLOY / "workspace.docker.yaml") if a == "/opt/dagster/workspace.yaml" else a
            for a in services()["webserver-read-only"]["command"]
        ]
    )
    operators = services()["oauth2-proxy"]["environment"]
    viewers = services()["oauth2-proxy-viewers"]["environment"]
    assert operators["OAUTH2_PROXY_COOKIE_NAME"] != viewers["OAUTH2_PROXY_COOKIE_NAME"]
    assert operators["OAUTH2_PROXY_REDIRECT_URL"] != viewers["OAUTH2_PROXY_REDIRECT_URL"]


def test_compose_services_mount_only_their_folders() -> None:
    expected = {
        "flux-home-init": {FLUX_HOME: ("", False)},
        "postgres": {},
        "code-server": {  # runs have their own containers; the sensors write findings
            FLUX_HOME: ("", False),
            **{
                f"{FLUX_HOME}/{zone}": (zone, True)
                for zone in ("landing", "published", "warehouse", "receipts")
            },
        },
        "webserver": {},
        "webserver-read-only": {},
        "daemon": {f"{FLUX_HOME}/run_errors": ("run_errors", True)},
        "oauth2-proxy": {},
        "oauth2-proxy-viewers": {},
        "metrics": {FLUX_HOME: ("", True)},  # reads only; never a DuckDB file
        "intake": {
            f"{FLUX_HOME}/landing": ("landing", False),
            f"{FLUX_HOME}/state": ("state", False),
            f"{FLUX_HOME}/audit": ("audit", False),
            f"{FLUX_HOME}/outbox": ("outbox", True),
            f"{FLUX_HOME}/published": ("published", True),
            f"{FLUX_HOME}/receipts": ("receipts", True),
        },
    }
    assert {name: home_volume_mounts(svc) for name, svc in services().items()} == expected
    # Every subpath mounted exists: flux-home-init creates it before anyone mounts it.
    created = set(re.findall(r"'(\w+)'", " ".join(services()["flux-home-init"]["command"])))
    subpaths = {sub for mounted in expected.values() for sub, _ in mounted.values() if sub}
    assert subpaths <= created
    for name, svc in services().items():
        if any(sub for sub, _ in home_volume_mounts(svc).values()):
            init = svc["depends_on"]["flux-home-init"]
            assert init == {"condition": "service_completed_successfully"}, name
    viewer = mounts(services()["webserver-read-only"])
    assert any(v.endswith(":ro") for v in services()["webserver-read-only"]["volumes"])
    assert "/opt/dagster/dagster_home/storage" in viewer


def test_compose_intake_serves_tls_on_loopback_without_dagster_credentials() -> None:
    intake = services()["intake"]
    command = intake["command"]
    flux_cli_parses(command)
    secrets = compose()["secrets"]
    for flag in ("--ssl-certfile", "--ssl-keyfile"):
        path = option(command, flag)
        name = path.removeprefix("/run/secrets/")
        assert path.startswith("/run/secrets/") and name in intake["secrets"], flag
        assert "file" in secrets[name]
    (port,) = intake["ports"]
    published = re.fullmatch(r"\$\{FLUX_INTAKE_BIND:-127\.0\.0\.1\}:\$\{\w+:-\d+\}:(\d+)", port)
    assert published, f"the intake must publish on 127.0.0.1 by default: {port}"
    container_port = published.group(1)
    assert int(container_port) == int(option(command, "--port"))
    assert intake["read_only"] is True
    assert "https://localhost:" + container_port + "/healthz" in intake["healthcheck"]["test"][-1]
    env = intake["environment"]
    assert {"FLUX_OIDC_ISSUER", "FLUX_OIDC_AUDIENCE", "FLUX_OIDC_JWKS_URL", "FLUX_HOME"} <= set(env)
    assert not [k for k in env if k.startswith(("DAGSTER_", "POSTGRES", "OAUTH2_"))]


def test_compose_only_dagster_services_get_the_postgres_password() -> None:
    holders = {
        name for name, svc in services().items()
        if any("PASSWORD" in key for key in (svc.get("environment") or {}))
    }  # fmt: skip
    assert holders == {
        "postgres", "code-server", "webserver", "webserver-read-only", "daemon", "metrics",
    }  # fmt: skip
