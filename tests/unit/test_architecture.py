"""The layering the design promises, checked on the source: which folder may import which, no
import circle (type-checking-only and function-local imports included), a torch-free ingress, and
one list of tasks that the deployments and the routes follow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import cast, get_args

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from serve_app.api import build_api
from serve_app.app import DEPLOYMENT_FOR_TASK
from serve_app.config import AppArgs, ModelSpec
from serve_app.protocol import TASK_PATHS, Task
from serve_app.routing.registry import ModelRegistry, ServedModel
from tests.support.fakes import (
    FakeClassificationBackend,
    FakeEmbeddingBackend,
    FakeGenerationBackend,
    FakeRerankBackend,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("serve_app", "deployments", "autoscaling")
BODIES: dict[str, dict[str, object]] = {
    "/v1/embeddings": {"input": "x"},
    "/v1/classify": {"input": "x"},
    "/v1/completions": {"prompt": "x"},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "x"}]},
    **{path: {"query": "q", "documents": ["x"]} for path in TASK_PATHS["rerank"]},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports(path: Path) -> set[str]:
    """Every project module `path` imports, wherever the import statement sits."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    return {
        name: {target for target in _project_imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_autoscaling_imports_no_other_folder_of_the_project() -> None:
    outside = {
        (module, target)
        for module, targets in import_graph().items()
        if module.startswith("autoscaling")
        for target in targets
        if not target.startswith("autoscaling")
    }
    assert outside == set()


def test_the_replica_layer_never_imports_the_http_layer() -> None:
    upward = {
        (module, target)
        for module, targets in import_graph().items()
        if module.startswith("deployments")
        for target in targets
        if target.startswith("serve_app")
    }
    assert upward == set()


def test_no_module_imports_itself_through_a_circle() -> None:
    graph = import_graph()
    circles: list[list[str]] = []
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == []


def test_the_ingress_loads_neither_torch_nor_transformers() -> None:
    probe = (
        "import sys, serve_app.app, serve_app.ingress; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_every_task_has_a_deployment_and_its_routes() -> None:
    tasks = set(get_args(Task))
    assert set(DEPLOYMENT_FOR_TASK) == tasks
    assert set(TASK_PATHS) == tasks
    backends = {
        "embedding": FakeEmbeddingBackend(),
        "generation": FakeGenerationBackend(),
        "classification": FakeClassificationBackend(),
        "rerank": FakeRerankBackend(),
    }
    models = [
        ServedModel(ModelSpec(name=task, task=cast(Task, task), path="/unused"), backend)
        for task, backend in backends.items()
    ]
    api = build_api(ModelRegistry(models), AppArgs(models=[model.spec for model in models]))
    client = TestClient(api)
    routes = {route.path for route in api.routes if isinstance(route, APIRoute)}
    for task, paths in TASK_PATHS.items():
        assert set(paths) <= routes
        for path in paths:
            # Each task's routes answer its models and refuse another task's by name.
            other = "embedding" if task != "embedding" else "classification"
            refused = client.post(path, json={"model": other, **BODIES[path]})
            assert refused.status_code == 400, (path, refused.text)
            assert refused.json()["error"]["code"] == "wrong_model_task"
