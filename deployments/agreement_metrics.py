"""How closely a quantized model's outputs follow its full-precision reference, per task.

Each function takes the reference's outputs first and returns named figures (higher agreement and
cosine are better, a lower probability difference is better).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch


def embedding_agreement(
    reference: npt.NDArray[np.float32], quantized: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Cosine similarity of each probe's vector to the reference's: mean and worst."""
    cosines = _row_cosines(torch.from_numpy(reference), torch.from_numpy(quantized))
    return {"mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min())}


def logits_agreement(reference: torch.Tensor, quantized: torch.Tensor) -> dict[str, float]:
    """Next-token logits at every probe position (rows): same top-1 token, and logit cosine."""
    same_top1 = reference.argmax(dim=-1) == quantized.argmax(dim=-1)
    cosines = _row_cosines(reference, quantized)
    return {
        "top1_agreement": float(same_top1.float().mean()),
        "mean_logit_cosine": float(cosines.mean()),
        "positions": float(reference.shape[0]),
    }


def classification_agreement(
    reference: npt.NDArray[np.float32], quantized: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Class probabilities per probe (rows): same predicted label, and largest probability gap."""
    same_label = reference.argmax(axis=1) == quantized.argmax(axis=1)
    return {
        "label_agreement": float(same_label.mean()),
        "max_prob_diff": float(np.abs(reference - quantized).max()),
    }


def _row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
