"""The sequence classifier itself: texts in, each text's label and every label's score out.

No Ray here. Scores are softmax probabilities, or per-label sigmoids for a model configured with
`problem_type: multi_label_classification`; the label is the highest-scoring one either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BatchEncoding

from deployments.batching.length_groups import forward_by_length, pass_overhead_tokens
from deployments.contract import Classification
from deployments.loading.quantization import CheckedModel, classification_agreement, load_checked
from deployments.loading.source import ModelSource
from deployments.loading.torchscript import choose_forward
from deployments.loading.weights import footprint_bytes, load_pretrained, parameter_count, tokenize


class ClassificationModel:
    """Inputs longer than the model's maximum are truncated to it."""

    def __init__(self, source: ModelSource, max_input_tokens: int | None = None) -> None:
        directory = source.resolve_path()
        self.source = source
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.model, self.device, self.dtype = load_pretrained(
            AutoModelForSequenceClassification, source
        )
        config = self.model.config
        self.labels = [str(config.id2label[index]) for index in range(config.num_labels)]
        self.multi_label = config.problem_type == "multi_label_classification"
        limits = [
            getattr(config, "max_position_embeddings", None),
            _sane(self.tokenizer.model_max_length),
            max_input_tokens,
        ]
        self.max_input_tokens = min(limit for limit in limits if limit)
        self._forward, self.execution = choose_forward(
            self.model,
            self._tokenize,
            "logits",
            source.torchscript,
            self.device,
            source.quantization,
        )
        self._pass_overhead_tokens = pass_overhead_tokens(source.length_grouping, self.device)

    def _tokenize(self, texts: list[str]) -> BatchEncoding:
        encoded: BatchEncoding = tokenize(self.tokenizer, texts, self.max_input_tokens, self.device)
        return encoded

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], list[int]]:
        """(texts, labels) scores and each text's token count after truncation."""
        encoded = self._tokenize(list(texts))
        logits = forward_by_length(
            encoded, self._logits, self._pass_overhead_tokens, self.tokenizer.padding_side
        )
        scores = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        tokens = encoded["attention_mask"].sum(dim=1).tolist()
        return scores.cpu().numpy().astype(np.float32), tokens

    def _logits(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._forward(encoded).float()

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        scores, tokens = self.probabilities(texts)
        results = []
        for row, count in zip(scores, tokens, strict=True):
            best = int(row.argmax())
            by_label = zip(self.labels, row, strict=True)
            results.append(
                Classification(
                    label=self.labels[best],
                    score=float(row[best]),
                    scores={label: float(value) for label, value in by_label},
                    tokens=int(count),
                )
            )
        return results

    def describe(self) -> dict[str, object]:
        return {
            "labels": self.labels,
            "multi_label": self.multi_label,
            "max_input_tokens": self.max_input_tokens,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "quantization": self.source.quantization,
            "execution": self.execution,
            "pass_overhead_tokens": self._pass_overhead_tokens,
            "parameters": parameter_count(self.model),
            "memory_bytes": footprint_bytes(self.model),
        }


def _sane(model_max_length: int) -> int | None:
    """Tokenizers without a limit report a huge sentinel (1e30); treat that as none."""
    return model_max_length if model_max_length < 1_000_000 else None


def load(
    source: ModelSource, max_input_tokens: int | None = None
) -> CheckedModel[ClassificationModel]:
    """The model as `source` says, checked against its unquantized self when quantized."""
    return load_checked(
        source,
        build=lambda s: ClassificationModel(s, max_input_tokens),
        probe=lambda model, texts: model.probabilities(texts)[0],
        compare=classification_agreement,
    )
