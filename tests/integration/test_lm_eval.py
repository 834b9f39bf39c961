"""lm-evaluation-harness against the service: `local-completions` (a multiple-choice task, scored
by loglikelihood: token-id prompts, echo, logprobs) and `local-chat-completions` (a
generate_until task), each matched with what lm-eval's own `hf` model computes on the same
weights. Tasks are defined here, on a few local JSONL rows: no hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from tests.integration.conftest import TINY_GPT2 as MODEL
from tests.support.fixtures_models import TinyModels

TOLERANCE = 1e-4

MC_ROWS = [
    {"question": "The quick brown fox", "choices": [" jumps", " sleeps", " runs away"], "gold": 0},
    {"question": "Ray Serve batches", "choices": [" requests", " bananas"], "gold": 0},
    {"question": "Once upon a time", "choices": [" there was", " a king", " the end"], "gold": 2},
    {"question": "Hello", "choices": [" world", " there"], "gold": 1},
]
GEN_ROWS = [
    {"question": "Tell me a story.", "answer": "Once"},
    {"question": "What is Ray?", "answer": "A framework"},
    {"question": "Say hello.", "answer": "hello"},
]


def task_yaml(name: str, data: Path, body: str) -> str:
    return (
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n" + body
    )


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> TaskManager:
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    for name, rows in (("mc", MC_ROWS), ("gen", GEN_ROWS)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "tiny_mc.yaml").write_text(
        task_yaml(
            "tiny_mc",
            folder / "mc.jsonl",
            "output_type: multiple_choice\n"
            'doc_to_text: "{{question}}"\n'
            'doc_to_choice: "{{choices}}"\n'
            "doc_to_target: gold\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n",
        )
    )
    (folder / "tiny_gen.yaml").write_text(
        task_yaml(
            "tiny_gen",
            folder / "gen.jsonl",
            "output_type: generate_until\n"
            'doc_to_text: "{{question}}"\n'
            'doc_to_target: "{{answer}}"\n'
            "generation_kwargs:\n"
            '  until: ["\\n\\n"]\n'
            "  max_gen_toks: 12\n"
            "  do_sample: false\n"
            "metric_list:\n  - metric: exact_match\n",
        )
    )
    return TaskManager(include_path=str(folder))


def evaluate(
    model: str, model_args: dict[str, Any], task: str, tasks: TaskManager, chat: bool = False
) -> dict[str, Any]:
    results = simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[task],
        task_manager=tasks,
        apply_chat_template=chat,
        bootstrap_iters=0,
        log_samples=True,
    )
    assert results is not None
    evaluated: dict[str, Any] = results
    return evaluated


def hf_args(tiny_models: TinyModels) -> dict[str, Any]:
    return {"pretrained": str(tiny_models.gpt2), "device": "cpu", "dtype": "float32"}


def responses(results: dict[str, Any], task: str) -> list[Any]:
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return [sample["resps"] for sample in samples]


def test_loglikelihood_scores_match_lm_evals_own_hf_model(
    tiny_gpt2_url: str, tiny_models: TinyModels, tasks: TaskManager
) -> None:
    api_args = {
        "base_url": f"{tiny_gpt2_url}/v1/completions",
        "model": MODEL,
        "tokenizer": str(tiny_models.gpt2),
        "tokenizer_backend": "huggingface",
        "tokenized_requests": True,
        "batch_size": 4,  # several token prompts a request, one choice each
        "max_retries": 1,
    }
    served = evaluate("local-completions", api_args, "tiny_mc", tasks)
    direct = evaluate("hf", hf_args(tiny_models), "tiny_mc", tasks)
    served_resps, direct_resps = responses(served, "tiny_mc"), responses(direct, "tiny_mc")
    assert len(served_resps) == len(MC_ROWS)
    for mine, theirs in zip(served_resps, direct_resps, strict=True):
        assert len(mine) == len(theirs)  # one (loglikelihood, is_greedy) per choice
        for [(score, greedy)], [(expected, expected_greedy)] in zip(mine, theirs, strict=True):
            assert score == pytest.approx(expected, abs=TOLERANCE)
            assert score < 0
            assert greedy == expected_greedy
    for metric in ("acc,none", "acc_norm,none"):
        assert served["results"]["tiny_mc"][metric] == direct["results"]["tiny_mc"][metric]


def test_generate_until_answers_match_lm_evals_own_hf_model(
    tiny_gpt2_url: str, tiny_models: TinyModels, tasks: TaskManager
) -> None:
    api_args = {
        "base_url": f"{tiny_gpt2_url}/v1/chat/completions",
        "model": MODEL,
        "max_retries": 1,
    }
    served = evaluate("local-chat-completions", api_args, "tiny_gen", tasks, chat=True)
    direct = evaluate("hf", hf_args(tiny_models), "tiny_gen", tasks, chat=True)
    served_texts, direct_texts = responses(served, "tiny_gen"), responses(direct, "tiny_gen")
    assert len(served_texts) == len(GEN_ROWS)
    assert served_texts == direct_texts
    assert any(text[0][0] for text in served_texts)  # the answers say something
    assert (
        served["results"]["tiny_gen"]["exact_match,none"]
        == direct["results"]["tiny_gen"]["exact_match,none"]
    )
