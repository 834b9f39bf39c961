"""The application builder named in serve_config.yaml: `serve_app.app:build_app`."""

from __future__ import annotations

from typing import Any, cast

from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.classification.deployment import ClassificationDeployment
from deployments.embedding.deployment import EmbeddingDeployment
from deployments.generation.deployment import GenerationDeployment
from deployments.rerank.deployment import RerankDeployment
from serve_app.config import AppArgs, ConfigError, ModelSpec, parse_args
from serve_app.ingress import Ingress
from serve_app.protocol import Task

# The replica class of each task (the tasks themselves: serve_app.protocol.Task). These modules are
# torch-free: a model replica imports torch and transformers when it starts, the ingress never.
DEPLOYMENT_FOR_TASK: dict[Task, Deployment] = {
    "embedding": cast(Deployment, EmbeddingDeployment),
    "generation": cast(Deployment, GenerationDeployment),
    "classification": cast(Deployment, ClassificationDeployment),
    "rerank": cast(Deployment, RerankDeployment),
}


def build_app(args: dict[str, Any] | AppArgs) -> Application:
    """Validate `args` and wire the ingress to one deployment per served model.

    Raises ConfigError (a ValueError) naming the bad field, so `serve deploy` fails clearly.
    """
    app_args = parse_args(args)
    handles = {spec.name: _bind_model(spec) for spec in app_args.models}
    ingress = cast(Deployment, Ingress)
    return ingress.options(name=app_args.ingress_deployment).bind(app_args, handles)


def _bind_model(spec: ModelSpec) -> Application:
    deployment = DEPLOYMENT_FOR_TASK.get(spec.task)
    if deployment is None:
        raise ConfigError(f"models: task {spec.task!r} of {spec.name!r} is not served yet")
    return deployment.options(name=spec.deployment_name).bind(
        spec.name, spec.source(), spec.max_input_tokens
    )
