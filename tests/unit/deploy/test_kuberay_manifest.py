"""deploy/kuberay/: the RayService manifests deploy exactly the project's Serve configs.

`serveConfigV2` of each manifest, parsed, equals its config file, parsed: no overrides. The
rest checks what a reader of the manifests relies on: the cluster can place every deployment,
GPUs asked for match GPUs given, the Makefile's `SERVE_ENV` is on every Ray container, in the
cluster guide and in the GPU check, the metrics ports are the ones the monitors scrape, and the
image pins what pyproject.toml pins.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
KUBERAY = REPO_ROOT / "deploy" / "kuberay"

Doc = dict[str, Any]

# manifest -> the Serve config it must embed verbatim (deploy/kuberay/sync_serve_config.py)
MANIFESTS = {
    "rayservice.yaml": "serve_config.yaml",
    "rayservice.gpu.yaml": "serve_config.gpu.yaml",
}


def assignments(words: list[str]) -> dict[str, str]:
    """`["A=1", "B=2"]` -> `{"A": "1", "B": "2"}`, as a shell reads them before a command."""
    return dict(word.split("=", 1) for word in words)


def makefile_serve_env() -> dict[str, str]:
    """The variables `make serve` and `make bench` start Ray with (`SERVE_ENV := ...`)."""
    match = re.search(r"^SERVE_ENV := (.+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile has no SERVE_ENV line"
    return assignments(match.group(1).split())


# What a cluster needs to run like `make serve`: the same Ray settings, and no hub downloads.
RECOMMENDED_ENV = {**makefile_serve_env(), "HF_HUB_OFFLINE": "1"}
HAPROXY_BINARY = "RAY_SERVE_HAPROXY_BINARY_PATH"
SYNC_HINT = "run `python deploy/kuberay/sync_serve_config.py` after editing a Serve config"


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def rayservice(manifest: str) -> Doc:
    [service] = [d for d in load_docs(KUBERAY / manifest) if d.get("kind") == "RayService"]
    return service


def groups(service: Doc) -> list[Doc]:
    """The head group, then every worker group."""
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def ray_container(group: Doc) -> Doc:
    containers: list[Doc] = group["template"]["spec"]["containers"]
    return containers[0]  # KubeRay runs Ray in the first container


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU/GPU quantity: 4, "4", "500m"."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def group_resources(group: Doc) -> tuple[float, float]:
    """(CPUs, GPUs) Ray sees on one pod: rayStartParams, else the container's limits."""
    params = group.get("rayStartParams", {})
    limits = ray_container(group).get("resources", {}).get("limits", {})
    cpus = quantity(params.get("num-cpus", limits.get("cpu", 0)))
    gpus = quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    return cpus, gpus


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^,;\s]+)", requirement)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize(("manifest", "config"), MANIFESTS.items())
def test_serve_config_v2_is_the_config_file(manifest: str, config: str) -> None:
    service = rayservice(manifest)
    assert service["apiVersion"] == "ray.io/v1"
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((REPO_ROOT / config).read_text()), (
        f"{manifest} serveConfigV2 differs from {config}: {SYNC_HINT}"
    )


def test_the_sync_script_reports_no_drift() -> None:
    """The script's own mapping is the one tested here, and it would change nothing."""
    spec = importlib.util.spec_from_file_location("sync", KUBERAY / "sync_serve_config.py")
    assert spec is not None
    assert spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert {m.name: c.name for m, c in sync.MANIFESTS.items()} == MANIFESTS
    assert sync.main(["--check"]) == 0, SYNC_HINT


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_ray_version_and_image_match_the_project(manifest: str) -> None:
    service = rayservice(manifest)
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == pyproject_pins()["ray"]
    images = {ray_container(g)["image"] for g in groups(service)}
    assert len(images) == 1, f"one image for every Ray pod (same Ray and Python): {images}"


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_autoscaler_is_on_and_worker_bounds_are_consistent(manifest: str) -> None:
    cluster = rayservice(manifest)["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    # A pod outlives the policy's scale-down, so a replica it removes can come back in place.
    config = yaml.safe_load(rayservice(manifest)["spec"]["serveConfigV2"])
    delays = [
        d["autoscaling_config"]
        .get("policy", {})
        .get("policy_kwargs", {})
        .get("downscale_delay_s", 0)
        for d in config["applications"][0]["deployments"]
        if "autoscaling_config" in d
    ]
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] >= max([60, *delays])
    assert cluster["authOptions"] == {"mode": "token"}  # Ray 2.60 turns token auth on
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
    # The head runs no replicas, so losing a worker never takes the control plane with it.
    assert group_resources(cluster["headGroupSpec"])[0] == 0


@pytest.mark.parametrize(("manifest", "config"), MANIFESTS.items())
def test_every_deployment_fits_some_worker_pod(manifest: str, config: str) -> None:
    """A replica asking for more than any pod has is infeasible: it would pend forever."""
    service = rayservice(manifest)
    workers = [group_resources(g) for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    for app in serve_config["applications"]:
        for deployment in app["deployments"]:
            options = deployment.get("ray_actor_options", {})
            cpus, gpus = float(options.get("num_cpus", 1)), float(options.get("num_gpus", 0))
            assert any(cpus <= c and gpus <= g for c, g in workers), (
                f"{config}: {deployment['name']} needs {cpus} CPU, {gpus} GPU; pods: {workers}"
            )


def test_gpu_variant_asks_for_the_gpus_it_declares() -> None:
    service = rayservice("rayservice.gpu.yaml")
    gpu_groups = [
        g
        for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        if "nvidia.com/gpu" in ray_container(g)["resources"]["limits"]
    ]
    assert gpu_groups, "the GPU manifest has a GPU worker group"
    for group in gpu_groups:
        resources = ray_container(group)["resources"]
        gpus = quantity(resources["limits"]["nvidia.com/gpu"])
        assert quantity(group["rayStartParams"]["num-gpus"]) == gpus
        assert quantity(resources["requests"]["nvidia.com/gpu"]) == gpus
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    models = [d for d in config["applications"][0]["deployments"] if d["name"] != "Ingress"]
    assert all(d["ray_actor_options"]["num_gpus"] > 0 for d in models)
    # The CPU manifest asks for no GPU anywhere.
    cpu_service = rayservice("rayservice.yaml")
    assert all(group_resources(g)[1] == 0 for g in groups(cpu_service))


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_recommended_env_on_every_ray_container(manifest: str) -> None:
    for group in groups(rayservice(manifest)):
        env = {e["name"]: e.get("value") for e in ray_container(group).get("env", [])}
        assert {k: env.get(k) for k in RECOMMENDED_ENV} == RECOMMENDED_ENV, group.get("groupName")
        # The image's `pip install .` puts the console script in /usr/local/bin.
        assert env.get(HAPROXY_BINARY) == "/usr/local/bin/serve-inference-haproxy"


def test_make_serve_starts_haproxy_through_the_wrapper() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    match = re.search(r"^HAPROXY_ENV := (.+)$", makefile, re.M)
    assert match, "Makefile has no HAPROXY_ENV line"
    assert assignments(match.group(1).split())[HAPROXY_BINARY].endswith("/serve-inference-haproxy")
    for target in ("serve", "bench", "soak"):
        recipe = re.search(rf"^{target}: .*\n\t(?:.*\n\t)*.*\$\(SERVE_ENV\) (.*)$", makefile, re.M)
        assert recipe, target
        assert recipe.group(1).startswith("$(HAPROXY_ENV)"), target


def test_serve_env_includes_the_fast_path_and_rare_node_wide_gc() -> None:
    env = makefile_serve_env()
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    # Ray's default lets the raylet collect garbage in every process at once every 10 s.
    assert int(env["RAY_local_gc_min_interval_s"]) >= 60


def test_cluster_guide_starts_every_node_with_the_serve_env() -> None:
    exports = [
        line
        for line in (REPO_ROOT / "docs" / "cluster.md").read_text().splitlines()
        if line.startswith("export RAY_SERVE_")
    ]
    assert len(exports) == 2, "docs/cluster.md: one export for the head, one for the workers"
    for line in exports:
        exported = assignments(line.split()[1:])
        assert {k: exported.get(k) for k in RECOMMENDED_ENV} == RECOMMENDED_ENV, line
        assert exported[HAPROXY_BINARY] == "$wrapper", line


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_metrics_ports_are_declared_annotated_and_monitored(manifest: str) -> None:
    monitors = [d for d in load_docs(KUBERAY / "monitoring.yaml") if d["kind"] == "PodMonitor"]
    for group in groups(rayservice(manifest)):
        port = group["rayStartParams"]["metrics-export-port"]
        ports = {p["name"]: p["containerPort"] for p in ray_container(group)["ports"]}
        assert str(ports["metrics"]) == port
        template = group["template"]["metadata"]
        assert template["annotations"]["prometheus.io/port"] == port
        assert template["annotations"]["prometheus.io/scrape"] == "true"
        # Some PodMonitor selects these pods (KubeRay adds ray.io/node-type) and scrapes
        # "metrics"; every port a monitor names exists on the pods it selects.
        node_type = "head" if "groupName" not in group else "worker"
        labels = {**template["labels"], "ray.io/node-type": node_type}
        selecting = [
            m for m in monitors if m["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert selecting, f"no PodMonitor selects the {node_type} pods"
        scraped = {e["port"] for m in selecting for e in m["spec"]["podMetricsEndpoints"]}
        assert "metrics" in scraped
        assert scraped <= ports.keys(), f"{node_type}: monitored ports {scraped} not all declared"


def test_dockerfile_installs_pinned_cpu_torch_before_the_project() -> None:
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    torch_pin = pyproject_pins()["torch"]
    torch_at = dockerfile.index(f"RUN pip install torch=={torch_pin} ")
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu\n" in dockerfile  # default
    assert torch_at < dockerfile.index("RUN pip install . ")
    for package in ("serve_app", "deployments", "autoscaling"):
        assert f"COPY {package} " in dockerfile, f"{package} is imported by the Serve config"


def test_readme_references_exist() -> None:
    readme = (KUBERAY / "README.md").read_text()
    for path in re.findall(r"`((?:deploy|docs)/[\w./-]+)`", readme):
        assert (REPO_ROOT / path).exists(), f"deploy/kuberay/README.md names missing {path}"
    assert "deploy/grafana/" in readme


def test_the_gpu_check_starts_ray_with_the_serve_env() -> None:
    script = (REPO_ROOT / "scripts" / "gpu_check.sh").read_text().splitlines()
    exports = [line for line in script if line.startswith("export RAY_SERVE_")]
    assert len(exports) == 1, "scripts/gpu_check.sh: one export of the serve environment"
    assert assignments(exports[0].split()[1:]) == makefile_serve_env()
