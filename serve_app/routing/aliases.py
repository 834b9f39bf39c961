"""Model aliases that split traffic between served models by weight (A/B tests, canaries).

An alias is a `model` name clients may send; each request picks one target with probability
weight / total. The response's `model` names the target that answered.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from serve_app.protocol import TASK_PATHS, Task


class AliasTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="A served model's `name`.")
    weight: float = Field(gt=0, description="Relative share of the alias's traffic.")


class AliasSpec(BaseModel):
    """`aliases[]` in serve_config.yaml args: `{name, targets: [{model, weight}]}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    targets: list[AliasTarget] = Field(min_length=1)

    def pick(self, rng: random.Random) -> str:
        """One target's model name, drawn by weight."""
        return pick_weighted([t.model for t in self.targets], [t.weight for t in self.targets], rng)

    def card(self, task: Task, created: int) -> dict[str, object]:
        """The alias as /v1/models lists it, with the routes its task answers."""
        total = sum(target.weight for target in self.targets)
        return {
            "id": self.name,
            "object": "model",
            "created": created,
            "owned_by": "serve-inference",
            "task": task,
            "routes": list(TASK_PATHS[task]),
            "alias_of": [
                {"model": t.model, "weight": t.weight, "share": t.weight / total}
                for t in self.targets
            ],
        }


def pick_weighted(names: Sequence[str], weights: Sequence[float], rng: random.Random) -> str:
    return rng.choices(list(names), weights=list(weights), k=1)[0]
