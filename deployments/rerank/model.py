"""The cross-encoder itself: a query and documents in, each pair's relevance score out.

No Ray here. The model is a sequence classifier with one output (sentence-transformers'
CrossEncoder format); a pair is tokenized as CrossEncoder tokenizes it (query first, then the
document, truncated together to the model's maximum) and its logit goes through the activation
CrossEncoder would apply: the one its config names, else a sigmoid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
from transformers import BatchEncoding, PretrainedConfig

from deployments.contract import RelevanceScore
from deployments.loading.quantization import CheckedModel, load_checked, relevance_agreement
from deployments.loading.source import ModelSource
from deployments.loading.weights import tokenize
from deployments.sequence.scorer import SequenceScorer

logger = logging.getLogger("ray.serve")

Pair = tuple[str, str]  # (query, document)

# The query the TorchScript trace and the quantization check pair their probe texts with.
PROBE_QUERY = "Which of these texts is about animals?"

# CrossEncoder's activations by class name (it names them by dotted path in config.json).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Sigmoid": torch.sigmoid,
    "Identity": lambda logits: logits,
    "Tanh": torch.tanh,
}


def activation_name(config: PretrainedConfig) -> str:
    """The activation CrossEncoder applies for this config: the one saved with the model
    (`sentence_transformers.activation_fn`, or the older `sbert_ce_default_activation_function`)
    when it is one of torch's, else a sigmoid, CrossEncoder's default for one output."""
    saved = getattr(config, "sentence_transformers", None) or {}
    path = saved.get("activation_fn") or getattr(
        config, "sbert_ce_default_activation_function", None
    )
    if not path:
        return "Sigmoid"
    if not str(path).startswith("torch."):
        # CrossEncoder refuses code from outside torch unless trusted, and falls back too.
        logger.warning("activation %s is not torch's; using Sigmoid as CrossEncoder does", path)
        return "Sigmoid"
    name = str(path).rpartition(".")[2]
    if name not in ACTIVATIONS:
        raise ValueError(
            f"the model's config names the activation {path}; rerank supports "
            f"{', '.join(sorted(ACTIVATIONS))}"
        )
    return name


class RerankModel(SequenceScorer):
    """Pairs longer than the model's maximum are truncated to it (the longer segment first)."""

    def __init__(self, source: ModelSource, max_input_tokens: int | None = None) -> None:
        super().__init__(source, max_input_tokens)
        labels = self.model.config.num_labels
        if labels != 1:
            raise ValueError(
                f"{source.resolve_path()} has {labels} output labels; a rerank model is a "
                "cross-encoder with one (serve it with task: classification instead)"
            )
        self.activation = activation_name(self.model.config)
        self._activate = ACTIVATIONS[self.activation]

    def _probe_inputs(self, texts: list[str]) -> BatchEncoding:
        return self._tokenize([(PROBE_QUERY, text) for text in texts])

    def _tokenize(self, pairs: Sequence[Pair]) -> BatchEncoding:
        queries = [query for query, _ in pairs]
        documents = [document for _, document in pairs]
        encoded: BatchEncoding = tokenize(
            self.tokenizer, queries, self.max_input_tokens, self.device, pairs=documents
        )
        return encoded

    @torch.inference_mode()
    def scores(self, pairs: Sequence[Pair]) -> tuple[npt.NDArray[np.float32], list[int]]:
        """Each pair's relevance and its token count after truncation."""
        logits, tokens = self._logits(self._tokenize(pairs))
        relevance = self._activate(logits[:, 0])
        return relevance.cpu().numpy().astype(np.float32), tokens

    def rerank(self, pairs: Sequence[Pair]) -> list[RelevanceScore]:
        scores, tokens = self.scores(pairs)
        return [
            RelevanceScore(score=float(score), tokens=int(count))
            for score, count in zip(scores, tokens, strict=True)
        ]

    def describe(self) -> dict[str, object]:
        return {"activation": self.activation, **super().describe()}


def load(source: ModelSource, max_input_tokens: int | None = None) -> CheckedModel[RerankModel]:
    """The model as `source` says, checked against its unquantized self when quantized."""
    return load_checked(
        source,
        build=lambda s: RerankModel(s, max_input_tokens),
        probe=lambda model, texts: model.scores([(PROBE_QUERY, text) for text in texts])[0],
        compare=relevance_agreement,
    )
