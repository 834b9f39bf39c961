"""Token-array inputs of /v1/embeddings turned into text, as each model's `token_inputs` says.

OpenAI's ids belong to the OpenAI encoding the client tokenized with (LangChain sends cl100k_base
ids for model names tiktoken does not know), not to the served model's vocabulary: read as the
model's own ids they would give wrong vectors without any error. So `openai` decodes them with
that encoding (quicktok: OpenAI's encodings on local disk, no torch), `model_vocabulary` with the
model's own tokenizer.json (the `tokenizers` library, no torch), and the text then takes the path
every text takes: the cache, the coalescer and the model's tokenizer. `reject` refuses them.

Every id is checked against the vocabulary first: quicktok raises on an unknown id, and
`tokenizers` silently drops it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from serve_app.config import ModelSpec
from serve_app.embedding.schemas import EmbeddingRequest
from serve_app.errors import InvalidRequest
from serve_app.routing.registry import ServedModel


@dataclass(frozen=True)
class Vocabulary:
    """What the route needs of a tokenizer: its id range, its gaps, and a batched decode."""

    name: str  # as error messages name it
    size: int  # every id is below this
    gaps: frozenset[int]  # ids below `size` that are no token (between a vocabulary's parts)
    decode: Callable[[list[list[int]]], list[str]]

    def texts(self, arrays: list[list[int]]) -> list[str]:
        for index, ids in enumerate(arrays):
            bad = self._first_unknown(ids)
            if bad is not None:
                raise InvalidRequest(
                    f"Input {index} holds the token id {bad}, which is not a token of "
                    f"{self.name} (ids 0 to {self.size - 1}). Send the ids that tokenizer gives, "
                    "or the text itself.",
                    param="input",
                    code="invalid_token_id",
                )
        return self.decode(arrays)

    def _first_unknown(self, ids: list[int]) -> int | None:
        if max(ids) < self.size and self.gaps.isdisjoint(ids):
            return None
        return next(token for token in ids if token >= self.size or token in self.gaps)


def openai_encoding(name: str) -> Vocabulary:
    import quicktok  # on first need, not on import: an encoding takes 0.2-0.4 s to load

    encoding = quicktok.get_encoding(name)

    def is_token(token: int) -> bool:
        try:
            encoding.decode_single_token_bytes(token)
        except KeyError:
            return False
        return True

    size = int(encoding.n_vocab)
    gaps = frozenset(token for token in range(size) if not is_token(token))
    return Vocabulary(f"the OpenAI encoding {name}", size, gaps, encoding.decode_batch)


def model_vocabulary(spec: ModelSpec) -> Vocabulary:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(spec.vocabulary_file()))
    size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1
    gaps = frozenset(token for token in range(size) if tokenizer.id_to_token(token) is None)
    # The ids the tokenizer adds to every text ([CLS], [SEP], padding): the model's tokenizer adds
    # its own again. Other special tokens stay: [UNK] decodes to "[UNK]", which tokenizes back to
    # [UNK], where skipping every special token would drop it from the text.
    padding = tokenizer.padding
    tokenizer.no_padding()
    tokenizer.no_truncation()
    framing = frozenset(tokenizer.encode("").ids) | ({padding["pad_id"]} if padding else set())

    def decode(arrays: list[list[int]]) -> list[str]:
        kept = [[token for token in ids if token not in framing] for ids in arrays]
        texts: list[str] = tokenizer.decode_batch(kept, skip_special_tokens=False)
        return texts

    return Vocabulary(f"the vocabulary of the model '{spec.name}'", size, gaps, decode)


def rejection(model_name: str) -> InvalidRequest:
    return InvalidRequest(
        f"The model '{model_name}' does not accept token ids as 'input' (its token_inputs "
        "setting is reject). Send the text itself; with LangChain's OpenAIEmbeddings pass "
        "check_embedding_ctx_length=False so it sends text; or ask the operator to set "
        f"token_inputs: openai for '{model_name}'.",
        param="input",
        code="token_inputs_rejected",
    )


class TokenInputs:
    """One per ingress replica: each model's vocabulary, loaded once, on first use (at start-up
    for `openai`, so the first LangChain request does not wait for the encoding)."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self._vocabularies: dict[str, Vocabulary] = {}  # by encoding name or model name
        for model in models:
            if model.task == "embedding" and model.spec.token_inputs == "openai":
                self._vocabulary(model.spec)

    def texts(self, request: EmbeddingRequest, model: ServedModel) -> list[str]:
        """The request's inputs as text, token arrays decoded as `model` reads them."""
        arrays = request.token_arrays()
        if arrays is None:
            return request.texts()
        if model.spec.token_inputs == "reject":
            raise rejection(model.name)
        return self._vocabulary(model.spec).texts(arrays)

    def _vocabulary(self, spec: ModelSpec) -> Vocabulary:
        key = spec.token_encoding if spec.token_inputs == "openai" else f"model:{spec.name}"
        vocabulary = self._vocabularies.get(key)
        if vocabulary is None:
            if spec.token_inputs == "openai":
                vocabulary = openai_encoding(spec.token_encoding)
            else:
                vocabulary = model_vocabulary(spec)
            self._vocabularies[key] = vocabulary
        return vocabulary
