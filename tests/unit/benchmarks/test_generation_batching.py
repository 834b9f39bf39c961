"""benchmarks/generation_batching.py: the config it serves and the requests it sends."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from benchmarks.generation_batching import MODES, completion_bodies, config_for_modes, model_name
from serve_app.config import AppArgs

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_one_model_served_once_per_batching_mode() -> None:
    base = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    config = config_for_modes(base, "/models/gen", num_cpus=0.5)
    application = config["applications"][0]
    args = AppArgs.model_validate(application["args"])
    assert [(m.name, m.task, m.path, m.generation_batching) for m in args.models] == [
        (model_name(mode), "generation", "/models/gen", mode) for mode in MODES
    ]
    deployments = {d["name"]: d for d in application["deployments"]}
    assert set(deployments) == {"Ingress", *(m.deployment_name for m in args.models)}
    for model in args.models:
        options = deployments[model.deployment_name]
        assert options["ray_actor_options"] == {"num_cpus": 0.5}
        assert options["user_config"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}
    assert base["applications"][0]["args"]["models"][0]["task"] == "embedding"  # a copy
    on_gpu = config_for_modes(base, "/models/gen", num_cpus=1, num_gpus=0.25)
    for options in on_gpu["applications"][0]["deployments"][1:]:
        assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0.25}


def test_completion_bodies_draw_budgets_in_range_and_repeat_by_seed() -> None:
    bodies, mean = completion_bodies("gen-static", 500, (8, 64), seed=3)
    parsed = [json.loads(body) for body in bodies]
    budgets = [body["max_tokens"] for body in parsed]
    assert min(budgets) == 8
    assert max(budgets) == 64
    assert mean == sum(budgets) / 500
    assert {body["model"] for body in parsed} == {"gen-static"}
    assert {body["temperature"] for body in parsed} == {0}
    assert completion_bodies("gen-static", 500, (8, 64), seed=3)[0] == bodies
    assert completion_bodies("gen-static", 500, (8, 64), seed=4)[0] != bodies
