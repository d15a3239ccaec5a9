"""The user's journeys, resolved the way a cluster, compose and a shell would.

No Docker engine, kind or cluster runs here, so each journey is checked by resolving what
it relies on: every namespaced object in `nps`; every ConfigMap, Secret, ServiceAccount
and volume a pod names exists in its namespace (unless optional); every host in a URL
names a Service (or compose service) that serves that port, or an outside name; probes
and Services point at ports the containers serve; KEDA's target and credentials exist;
kind's port mapping reaches Grafana's NodePort. And the README's own command blocks are
the input: every name, path, port and image in them must match the files they drive.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests import DOCUMENTED, K8S, containers, objects, pod_specs, services
from tests.support import ROOT
from worker.cli import build_parser

NAMESPACE = "nps"
# Where KEDA's operator runs (its release manifest's namespace): it resolves the
# ScaledObject's endpoints from there, not from the ScaledObject's namespace.
KEDA_NAMESPACE = "keda"
# What a rendering expects the cluster to have already, and why: nothing else may dangle.
EXPECTED_OUTSIDE = {
    # The base is the worker alone: a Collector named otel-collector beside it comes from
    # the observability component, or from the user.
    "base": {"http://otel-collector:4318"},
    # EKS: metrics go to the Collector the cluster already runs.
    "overlays/aws": {"http://otel-collector.observability.svc.cluster.local:4318"},
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
URL = re.compile(r"\b(https?)://([A-Za-z0-9.-]+)(?::(\d+))?")
# What each pinned image ships that a health check may run (from each image's own build:
# moto's and ours are Python images; Prometheus's is busybox; Grafana's is Alpine, whose
# busybox has wget). The Collector's image has no shell or client: it gets no check.
IMAGE_TOOLS = {
    "motoserver/moto": {"python"},
    "nps-worker": {"python", "nps-worker"},
    "prom/prometheus": {"wget", "sh"},
    "grafana/grafana": {"wget", "sh"},
    "otel/opentelemetry-collector-contrib": set(),
}


# Kubernetes


def named(rendering: str, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Objects of `kind` by (namespace, name)."""
    return {
        (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in objects(rendering, kind)
    }


def config_env(rendering: str, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets, as the kubelet would assemble them."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        found = named(rendering, kind).get((namespace, ref["name"]))
        if found:
            env.update(found.get("data", {}))
            env.update(found.get("stringData", {}))
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def served_ports(rendering: str, namespace: str, container: dict[str, Any]) -> set[int]:
    """The ports a container's program listens on, from its own configuration."""
    image = container["image"].split("@")[0].rsplit(":", 1)[0]
    env = config_env(rendering, namespace, container)
    args = " ".join(container.get("args", []))
    if image.endswith("nps-worker"):
        return {int(env.get("HEALTH_PORT", "8080"))} if "run" in args or not args else set()
    if image == "motoserver/moto":
        return {int(env.get("MOTO_PORT", "5000"))}
    if image == "prom/prometheus":
        listen = re.search(r"--web\.listen-address=\S*:(\d+)", args)
        return {int(listen.group(1)) if listen else 9090}
    if image == "grafana/grafana":
        return {int(env.get("GF_SERVER_HTTP_PORT", "3000"))}
    if image == "otel/opentelemetry-collector-contrib":
        return collector_ports()
    raise AssertionError(f"no rule for what {image} serves")


def collector_ports() -> set[int]:
    config = yaml.safe_load((ROOT / "observability/otel-collector/config.yaml").read_text())
    endpoints = [p["endpoint"] for p in config["receivers"]["otlp"]["protocols"].values()]
    endpoints += [e["endpoint"] for e in config["extensions"].values()]
    return {int(endpoint.rsplit(":", 1)[1]) for endpoint in endpoints}


def pods(rendering: str) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(namespace, workload name, pod template metadata, pod spec) for every workload."""
    for workload in objects(rendering):
        if workload["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            template = workload["spec"]["template"]
            yield (
                workload["metadata"]["namespace"],
                workload["metadata"]["name"],
                template["metadata"],
                template["spec"],
            )


def service_ports(rendering: str, namespace: str, name: str) -> set[int]:
    service = named(rendering, "Service").get((namespace, name))
    return {p["port"] for p in service["spec"]["ports"]} if service else set()


def resolves(rendering: str, url: str, from_namespace: str) -> str | None:
    """None when `url`'s host and port reach something; else what is wrong."""
    if url in EXPECTED_OUTSIDE.get(rendering, set()):
        return None
    scheme, host, port = URL.match(url).groups()  # type: ignore[union-attr]
    number = int(port) if port else (443 if scheme == "https" else 80)
    if host in {"localhost", "127.0.0.1", "0.0.0.0"}:
        return None  # the pod itself: probes and ports are checked on their own
    if host.endswith(".svc.cluster.local"):
        name, namespace = host.split(".")[:2]
    elif "." not in host:
        name, namespace = host, from_namespace
    else:
        return None  # an outside name (AWS, a registry)
    if number not in service_ports(rendering, namespace, name):
        return f"{url}: no Service {name!r} with port {number} in namespace {namespace!r}"
    return None


@pytest.mark.parametrize("rendering", DOCUMENTED)
def test_every_namespaced_object_lands_in_nps(rendering: str) -> None:
    stray = [
        f"{o['kind']}/{o['metadata']['name']}: {o['metadata'].get('namespace')}"
        for o in objects(rendering)
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != NAMESPACE
    ]
    assert not stray


@pytest.mark.parametrize("rendering", DOCUMENTED)
def test_everything_a_pod_references_exists_in_its_namespace(rendering: str) -> None:
    missing = []
    for namespace, name, _, spec in pods(rendering):
        account = spec.get("serviceAccountName", "default")
        if account != "default" and (namespace, account) not in named(rendering, "ServiceAccount"):
            missing.append(f"{name}: ServiceAccount {account}")
        refs: list[tuple[str, dict[str, Any]]] = []
        for container in containers(spec):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    refs.append(("ConfigMap", source["configMapRef"]))
                else:
                    refs.append(("Secret", source["secretRef"]))
            for variable in container.get("env", []):
                source = variable.get("valueFrom", {})
                if "configMapKeyRef" in source:
                    refs.append(("ConfigMap", source["configMapKeyRef"]))
                if "secretKeyRef" in source:
                    refs.append(("Secret", source["secretKeyRef"]))
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                refs.append(("ConfigMap", volume["configMap"]))
            if "secret" in volume:
                refs.append(
                    ("Secret", {**volume["secret"], "name": volume["secret"]["secretName"]})
                )
        for kind, ref in refs:
            found = named(rendering, kind).get((namespace, ref["name"]))
            if found is None:
                if not ref.get("optional"):
                    missing.append(f"{name}: {kind} {ref['name']}")
            elif "key" in ref and ref["key"] not in {
                *found.get("data", {}),
                *found.get("stringData", {}),
            }:
                missing.append(f"{name}: {kind} {ref['name']} has no key {ref['key']}")
        mounts = {m["name"] for c in containers(spec) for m in c.get("volumeMounts", [])}
        declared = {v["name"] for v in spec.get("volumes", [])}
        missing += [f"{name}: volume {m}" for m in sorted(mounts - declared)]
    assert not missing


@pytest.mark.parametrize("rendering", DOCUMENTED)
def test_every_url_reaches_a_service_that_serves_its_port(rendering: str) -> None:
    problems = []
    for config_map in objects(rendering, "ConfigMap"):
        namespace = config_map["metadata"]["namespace"]
        for text in config_map.get("data", {}).values():
            for match in URL.finditer(text):
                problems.append(resolves(rendering, match.group(0), namespace))
    for namespace, _, _, spec in pods(rendering):
        for container in containers(spec):
            texts = [
                *container.get("args", []),
                *config_env(rendering, namespace, container).values(),
            ]
            for text in texts:
                for match in URL.finditer(text):
                    problems.append(resolves(rendering, match.group(0), namespace))
    for scaled in objects(rendering, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            for text in trigger["metadata"].values():
                for match in URL.finditer(str(text)):
                    problems.append(resolves(rendering, match.group(0), KEDA_NAMESPACE))
    assert not [p for p in problems if p]


@pytest.mark.parametrize("rendering", DOCUMENTED)
def test_probes_and_services_point_at_ports_the_containers_serve(rendering: str) -> None:
    problems = []
    for namespace, name, _, spec in pods(rendering):
        for container in containers(spec):
            served = served_ports(rendering, namespace, container)
            declared = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for port_name, number in declared.items():
                if number not in served:
                    problems.append(f"{name}/{container['name']}: {port_name}={number} not served")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                action = container.get(probe, {}).get("httpGet") or container.get(probe, {}).get(
                    "tcpSocket"
                )
                if action is None:
                    continue
                port = declared.get(action["port"], action["port"])
                if port not in served:
                    problems.append(f"{name}/{container['name']}: {probe} port {port} not served")
    for service in objects(rendering, "Service"):
        namespace = service["metadata"]["namespace"]
        selector = service["spec"]["selector"]
        chosen = [
            spec
            for ns, _, metadata, spec in pods(rendering)
            if ns == namespace and selector.items() <= metadata.get("labels", {}).items()
        ]
        if not chosen:
            problems.append(f"Service {service['metadata']['name']} selects no pod")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for spec in chosen:
                ports = [p for c in spec["containers"] for p in c.get("ports", [])]
                if not any(target in (p.get("name"), p["containerPort"]) for p in ports):
                    problems.append(f"Service {service['metadata']['name']}: no port {target}")
    assert not problems


def test_keda_scales_a_deployment_beside_it_with_credentials_beside_it() -> None:
    rendering = "overlays/kind+keda"
    [scaled] = objects(rendering, "ScaledObject")
    namespace = scaled["metadata"]["namespace"]
    assert (namespace, scaled["spec"]["scaleTargetRef"]["name"]) in named(rendering, "Deployment")
    for trigger in scaled["spec"]["triggers"]:
        auth_name = trigger["authenticationRef"]["name"]
        auth = named(rendering, "TriggerAuthentication")[(namespace, auth_name)]
        for ref in auth["spec"]["secretTargetRef"]:
            secret = named(rendering, "Secret")[(namespace, ref["name"])]
            assert ref["key"] in {*secret.get("data", {}), *secret.get("stringData", {})}


def test_whatever_uses_the_queue_on_kind_creates_it_first() -> None:
    """The producer may start before any worker: it must not find the queue missing."""
    for _, name, _, spec in pods("overlays/kind"):
        [main] = spec["containers"]
        if main["image"].startswith("nps-worker") and main.get("args", ["run"])[0] in {
            "run",
            "produce",
        }:
            first = [c.get("args") for c in spec.get("initContainers", [])]
            assert ["provision"] in first, f"{name} starts without `nps-worker provision`"


def kind_cluster() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "overlays/kind/kind-cluster.yaml").read_text()))


def test_the_kind_node_image_is_pinned_by_digest_to_the_validated_kubernetes() -> None:
    from tests.manifests import KUBERNETES_VERSION

    images = {node["image"] for node in kind_cluster()["nodes"]}
    [image] = images
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", image), image
    assert image.split("@")[0] == f"kindest/node:v{KUBERNETES_VERSION}"
    namespace = named("base", "Namespace")[("", NAMESPACE)]
    labels = namespace["metadata"]["labels"]
    minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert labels["pod-security.kubernetes.io/enforce-version"] == f"v{minor}"


# Compose


def listens(name: str, service: dict[str, Any]) -> set[int]:
    """The ports a compose service's program listens on, from its configuration."""
    image = service["image"].rsplit(":", 1)[0]
    env = service.get("environment", {})
    if image == "nps-worker":
        command = service.get("command", ["run"])
        return {int(env.get("HEALTH_PORT", 8080))} if command[0] == "run" else set()
    if image == "motoserver/moto":
        return {int(env.get("MOTO_PORT", 5000))}
    if image == "prom/prometheus":
        return {9090}
    if image == "grafana/grafana":
        return {int(env.get("GF_SERVER_HTTP_PORT", 3000))}
    if image == "otel/opentelemetry-collector-contrib":
        return collector_ports()
    raise AssertionError(f"{name}: no rule for what {image} serves")


def mounted_texts(service: dict[str, Any]) -> Iterator[str]:
    for volume in service.get("volumes", []):
        source = Path(ROOT, volume.split(":")[0])
        if volume.startswith("./") and source.exists():
            files = [source] if source.is_file() else sorted(source.rglob("*"))
            yield from (f.read_text() for f in files if f.is_file())


def compose_problem(url: str) -> str | None:
    scheme, host, port = URL.match(url).groups()  # type: ignore[union-attr]
    number = int(port) if port else (443 if scheme == "https" else 80)
    if host in {"localhost", "127.0.0.1", "0.0.0.0"} or "." in host:
        return None
    if host not in services():
        return f"{url}: no compose service {host!r}"
    if number not in listens(host, services()[host]):
        return f"{url}: {host} does not listen on {number}"
    return None


def test_every_url_in_compose_reaches_a_service_that_listens_there() -> None:
    problems = []
    for service in services().values():
        texts = [str(v) for v in service.get("environment", {}).values()]
        texts += [str(part) for part in service.get("command", [])]
        texts += list(mounted_texts(service))
        for text in texts:
            problems += [compose_problem(m.group(0)) for m in URL.finditer(text)]
    assert not [p for p in problems if p]


def test_every_health_check_runs_a_tool_its_image_has_against_a_port_it_serves() -> None:
    for name, service in services().items():
        image = service["image"].rsplit(":", 1)[0]
        check = service.get("healthcheck")
        if check is None and image == "nps-worker":
            # The image's own HEALTHCHECK probes /healthz: only `run` serves it.
            assert service.get("command", ["run"])[0] == "run", f"{name} inherits HEALTHCHECK"
            continue
        if check is None or check.get("disable"):
            continue
        test = check["test"]
        assert test[0] == "CMD", name
        assert test[1] in IMAGE_TOOLS[image], f"{name}: {image} has no {test[1]}"
        ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", " ".join(test))}
        assert ports, f"{name}: its check reaches no local port"
        assert ports <= listens(name, service), f"{name}: checks {ports}"


def test_every_service_others_wait_to_be_healthy_can_become_healthy() -> None:
    for name, service in services().items():
        for target, condition in service.get("depends_on", {}).items():
            if condition["condition"] != "service_healthy":
                continue
            check = services()[target].get("healthcheck")
            inherited = services()[target]["image"].startswith("nps-worker")
            assert (check and not check.get("disable")) or inherited, f"{name} waits on {target}"


def test_compose_and_kubernetes_pin_the_same_image_versions() -> None:
    pinned = {s["image"] for s in services().values() if "/" in s["image"]}
    cluster = {
        c["image"]
        for rendering in DOCUMENTED
        for _, spec in pod_specs(rendering)
        for c in containers(spec)
        if "/" in c["image"] and "dkr.ecr" not in c["image"]
    }
    assert cluster == pinned


# The README's command blocks

KINDS = {"deployment": "Deployment", "service": "Service", "scaledobject": "ScaledObject"}


def readme_block(heading: str, index: int = 0) -> str:
    """The text of the `index`-th sh block under `## heading`."""
    section = (ROOT / "README.md").read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return str(re.findall(r"```sh\n(.*?)```", section, re.S)[index])


def commands(block: str) -> list[list[str]]:
    return [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]


def option(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1]


def check_kubectl(words: list[str], rendering: str) -> None:
    """`kubectl -n NS VERB ... KIND/NAME`: that object exists there, as rendered."""
    if words[1] == "apply":
        if "-k" in words:
            assert option(words, "-k") == "k8s/overlays/kind", words
        return
    at = words.index("-n")
    namespace, rest = words[at + 1], words[1:at] + words[at + 2 :]
    verb = rest[0]
    target = rest[2] if verb == "rollout" else rest[1]
    kind, _, name = target.partition("/") if "/" in target else (target, "/", rest[2])
    if namespace == KEDA_NAMESPACE:
        return  # KEDA's own objects come from its release manifest
    found = named(rendering, KINDS[kind]).get((namespace, name))
    assert found is not None, f"{words}: no {kind} {name} in {namespace}"
    if verb == "port-forward":
        mapping = next(w for w in rest[2:] if ":" in w)
        assert int(mapping.partition(":")[2]) in {p["port"] for p in found["spec"]["ports"]}


def test_the_kind_journey_resolves_as_typed() -> None:
    block = readme_block("Run on kind (Kubernetes)")
    cluster = kind_cluster()
    built = None
    for words in commands(block):
        if words[:3] == ["kind", "create", "cluster"]:
            path = Path(ROOT, option(words, "--config")).resolve()
            assert path == K8S / "overlays/kind/kind-cluster.yaml"
        elif words[:2] == ["docker", "build"]:
            built = option(words, "-t")
            assert words[-1] == "."
            assert (ROOT / "Dockerfile").exists()
        elif words[:3] == ["kind", "load", "docker-image"]:
            assert words[3] == built
            assert option(words, "--name") == cluster["name"]
        elif words[:3] == ["kind", "delete", "cluster"]:
            assert option(words, "--name") == cluster["name"]
        elif words[0] == "kubectl":
            check_kubectl(words, "overlays/kind")
        else:
            raise AssertionError(f"a command this test does not know: {words}")
    worker = named("overlays/kind", "Deployment")[(NAMESPACE, "nps-worker")]
    assert worker["spec"]["template"]["spec"]["containers"][0]["image"] == built
    # Grafana where the block says: host port -> kind node port -> the Grafana Service.
    [port] = set(re.findall(r"http://localhost:(\d+)", block))
    mapping = {m["hostPort"]: m["containerPort"] for m in cluster["nodes"][0]["extraPortMappings"]}
    grafana = named("overlays/kind", "Service")[(NAMESPACE, "grafana")]
    assert mapping[int(port)] == grafana["spec"]["ports"][0]["nodePort"]


def test_the_keda_journey_resolves_as_typed() -> None:
    block = readme_block("Run on kind (Kubernetes)", 1)
    readme_text = (ROOT / "README.md").read_text()
    for words in commands(block):
        assert words[0] == "kubectl", words
        if "-f" in words:
            manifest = option(words, "-f")
            version = re.search(r"/download/(v[\d.]+)/keda-([\d.]+)\.yaml$", manifest)
            assert version is not None, manifest
            assert version.group(1) == "v" + version.group(2)
            assert f"KEDA {version.group(1)}" in readme_text
            assert "--server-side" in words  # KEDA's CRDs are too large for client-side apply
        else:
            check_kubectl(words, "overlays/kind+keda")
    assert "# - ../../components/keda" in (K8S / "overlays/kind/kustomization.yaml").read_text()


def test_the_compose_journey_resolves_as_typed() -> None:
    block = readme_block("Run the full stack (Docker Compose)")
    parser = build_parser()
    for words in commands(block):
        assert words[:2] == ["docker", "compose"], words
        if "--scale" in words:
            name, _, count = option(words, "--scale").partition("=")
            service = services()[name]
            assert int(count) > 1
            assert "container_name" not in service, name
            assert "ports" not in service, name
        if words[2] == "run":
            name = words[words.index("--rm") + 1] if "--rm" in words else words[3]
            service = services()[name]
            arguments = words[words.index(name) + 1 :]
            parsed = parser.parse_args(arguments)  # the image's entrypoint is nps-worker
            assert service["image"].startswith("nps-worker")
            for value in vars(parsed).values():
                if isinstance(value, str) and URL.match(value):
                    assert compose_problem(value) is None, value
    published = {
        int(port.split(":")[-2])
        for service in services().values()
        for port in service.get("ports", [])
    }
    for port in re.findall(r"http://localhost:(\d+)", block):
        assert int(port) in published, port
