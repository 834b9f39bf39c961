"""The batching knobs a model deployment takes from `user_config`, live-reloadable."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class BatchSettings(BaseModel):
    """`user_config` of a model deployment. `serve deploy` with new values applies them live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0.0, le=10.0)

    @classmethod
    def from_user_config(cls, user_config: dict[str, Any] | None) -> BatchSettings:
        return cls.model_validate(user_config or {})

    def apply_to(self, batch_method: Any) -> None:
        """Point a `@serve.batch` method at these values (Ray keeps them per method)."""
        batch_method.set_max_batch_size(self.max_batch_size)
        batch_method.set_batch_wait_timeout_s(self.batch_wait_timeout_s)
