"""Tenants: named groups of API keys, each with a weight and a priority class, read from a YAML
file mounted like the keys file. A key joins a tenant by naming it after the key on its line of
api_keys_file; other keys (and every caller of an open service) belong to `default`.

    tenants:
      default: {weight: 1}
      search: {weight: 4, priority: high}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.gateway.config import TenantsConfig
from serve_app.gateway.fair_queue import Share

DEFAULT_TENANT = "default"
Priority = Literal["high", "normal", "low"]
PRIORITY_RANK: dict[Priority, int] = {"high": 0, "normal": 1, "low": 2}
# Tenant names become metric tags and appear in keys-file lines.
TENANT_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class TenantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(
        gt=0, description="Share of each busy model, relative to the other tenants' weights."
    )
    priority: Priority = Field(
        default="normal",
        description="Waiting requests of a higher class leave before any of a lower class.",
    )


class _TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[str, TenantSpec] = Field(min_length=1)


class _Name(BaseModel):
    name: str = Field(pattern=TENANT_NAME)


class Tenants:
    """The declared tenants by name; `default` is always one (weight 1 unless declared)."""

    def __init__(self, specs: dict[str, TenantSpec]) -> None:
        self._specs = {DEFAULT_TENANT: TenantSpec(weight=1.0), **specs}

    @classmethod
    def from_config(cls, config: TenantsConfig) -> Tenants | None:
        """The tenants of `config.file`, None when it is not set; ValueError saying what to fix."""
        if config.file is None:
            return None
        path = Path(config.file).expanduser()
        if not path.is_file():
            raise ValueError(f"gateway.tenants.file: {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text("utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        try:
            declared = _TenantsFile.model_validate(raw)
            for name in declared.tenants:
                _Name(name=name)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ValueError(
                f"{path}: {problems} (expected 'tenants: {{name: {{weight: <number > 0>, "
                "priority: high|normal|low}}}}', names of letters, digits, '_', '.', '-')"
            ) from None
        return cls(dict(declared.tenants))

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def share(self, name: str) -> Share:
        spec = self._specs.get(name) or self._specs[DEFAULT_TENANT]
        return Share(spec.weight, PRIORITY_RANK[spec.priority])
