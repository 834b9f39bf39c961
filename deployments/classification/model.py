"""The sequence classifier itself: texts in, each text's label and every label's score out.

No Ray here. Scores are softmax probabilities, or per-label sigmoids for a model configured with
`problem_type: multi_label_classification`; the label is the highest-scoring one either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from transformers import BatchEncoding

from deployments.contract import Classification
from deployments.loading.quantization import CheckedModel, classification_agreement, load_checked
from deployments.loading.source import ModelSource
from deployments.loading.weights import tokenize
from deployments.sequence.scorer import SequenceScorer


class ClassificationModel(SequenceScorer):
    """Inputs longer than the model's maximum are truncated to it."""

    def __init__(self, source: ModelSource, max_input_tokens: int | None = None) -> None:
        super().__init__(source, max_input_tokens)
        config = self.model.config
        self.labels = [str(config.id2label[index]) for index in range(config.num_labels)]
        self.multi_label = config.problem_type == "multi_label_classification"

    def _probe_inputs(self, texts: list[str]) -> BatchEncoding:
        return self._tokenize(texts)

    def _tokenize(self, texts: list[str]) -> BatchEncoding:
        encoded: BatchEncoding = tokenize(self.tokenizer, texts, self.max_input_tokens, self.device)
        return encoded

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], list[int]]:
        """(texts, labels) scores and each text's token count after truncation."""
        logits, tokens = self._logits(self._tokenize(list(texts)))
        scores = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return scores.cpu().numpy().astype(np.float32), tokens

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
        return {"labels": self.labels, "multi_label": self.multi_label, **super().describe()}


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
