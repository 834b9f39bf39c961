"""scripts/bench_config.py: a served config plus a generation model, still a valid application."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import yaml

from serve_app.config import AppArgs
from tests.support.script_modules import load_script

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench_config() -> ModuleType:
    return load_script("bench_config")


@pytest.mark.parametrize("base", ["serve_config.yaml", "serve_config.gpu.yaml"])
def test_the_generator_joins_a_valid_application(bench_config: ModuleType, base: str) -> None:
    original = yaml.safe_load((REPO_ROOT / base).read_text())
    config = bench_config.with_generator(
        original, "/models/gen", num_gpus=0.25, num_cpus=0.5, cpu_threads=2
    )
    application = config["applications"][0]
    args = AppArgs.model_validate(application["args"])
    generator = args.models[-1]
    assert (generator.name, generator.task, generator.path) == (
        bench_config.GENERATOR,
        "generation",
        "/models/gen",
    )
    assert generator.cpu_threads == 2  # as many as the generation ceiling's `generate`
    options = application["deployments"][-1]
    assert options["name"] == generator.deployment_name
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert len(original["applications"][0]["args"]["models"]) == len(args.models) - 1  # a copy


def test_the_script_builds_a_tiny_generator_and_writes_the_config(
    bench_config: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_config.main(["--out", str(tmp_path)]) == 0
    written = Path(capsys.readouterr().out.strip().splitlines()[-1])
    config = yaml.safe_load(written.read_text())
    model = config["applications"][0]["args"]["models"][-1]
    assert (Path(model["path"]) / "config.json").is_file()
    assert config["applications"][0]["deployments"][-1]["ray_actor_options"]["num_gpus"] == 0.0


def test_the_reranker_joins_beside_the_generator(
    bench_config: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_config.main(["--out", str(tmp_path), "--rerank", "--cpu-threads", "2"]) == 0
    written = Path(capsys.readouterr().out.strip().splitlines()[-1])
    application = yaml.safe_load(written.read_text())["applications"][0]
    args = AppArgs.model_validate(application["args"])
    generator, reranker = args.models[-2:]
    assert generator.name == bench_config.GENERATOR
    assert (reranker.name, reranker.task, reranker.cpu_threads) == (
        bench_config.RERANKER,
        "rerank",
        2,
    )
    assert reranker.path is not None
    assert (Path(reranker.path) / "config.json").is_file()
    options = application["deployments"][-1]
    assert options["name"] == reranker.deployment_name
    assert options["user_config"]["max_batch_size"] == 32


def test_the_default_config_with_a_reranker_fits_two_cpus(
    bench_config: ModuleType, tmp_path: Path
) -> None:
    """Every replica must be placed on the 2-CPU machine the benchmarks run on."""
    assert bench_config.main(["--out", str(tmp_path), "--rerank"]) == 0
    config = yaml.safe_load((tmp_path / "bench_config.yaml").read_text())
    deployments = config["applications"][0]["deployments"]
    asked = sum(d.get("ray_actor_options", {}).get("num_cpus", 1) for d in deployments)
    assert len(deployments) == 4
    assert asked <= 2
