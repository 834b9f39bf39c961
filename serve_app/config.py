"""The typed `args` block of serve_config.yaml, validated when the application is built."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deployments.loading.source import ModelSource
from serve_app.gateway.config import GatewayConfig
from serve_app.protocol import Task
from serve_app.routing.aliases import AliasSpec

_DEPLOYMENT_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
TokenInputsSetting = Literal["openai", "model_vocabulary", "reject"]
TokenEncoding = Literal["cl100k_base", "o200k_base"]
# The fallback's trigger before a model declared an objective: recent p95 at the ingress.
DEFAULT_TRIGGER_PERCENTILE = 95


class LatencyObjective(BaseModel):
    """A model's one latency objective: `percentile` of requests answered within `latency_ms`
    at the ingress. The fallback trigger, admission and the autoscaling policy's target read it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(gt=0, description="Latency promised to clients, ms.")
    percentile: Literal[50, 90, 95, 99] = Field(
        default=99, description="Share of requests (in percent) the promise covers."
    )
    admission: bool = Field(
        default=True,
        description="Refuse at once (503 + Retry-After, or send to `fallback`) a request whose "
        "predicted latency at the ingress is past 0.8 x `latency_ms` (a median prediction held "
        "against a high percentile), instead of queueing it.",
    )


@dataclass(frozen=True)
class LatencyTrigger:
    """When the ingress sends a model's requests to its fallback: recent pN past target_ms."""

    target_ms: float
    percentile: int


class ModelSpec(ModelSource):
    """One served model: its API name, task and where its weights are."""

    name: str = Field(min_length=1, max_length=128, description="The API's `model` value.")
    task: Task
    deployment: str | None = Field(
        default=None,
        description="Serve deployment name (what serve_config.yaml's `deployments:` entries use). "
        "Defaults to `name` with characters other than letters, digits, '-' and '_' as '-'.",
    )
    max_input_tokens: int | None = Field(
        default=None, ge=1, description="Truncate inputs to this many tokens (default: model max)."
    )
    supports_dimensions: bool = Field(
        default=False,
        description="Matryoshka-trained embedding model: `dimensions` may shorten its vectors.",
    )
    max_output_tokens: int = Field(
        default=1024,
        ge=1,
        description="Generation: the most tokens one completion may ask for with `max_tokens`; "
        "also the chat default when `max_tokens` is omitted (cut to fit the context).",
    )
    fallback: str | None = Field(
        default=None,
        description="A cheaper served model of the same task and output shape that answers "
        "when this one's queue is full, its recent latency is past latency_target_ms (or "
        "slo.latency_ms), or admission predicts it would miss its slo.",
    )
    latency_target_ms: float | None = Field(
        default=None,
        gt=0,
        description="Recent latency at the ingress above which to use `fallback` (at "
        "slo.percentile, p95 without an slo). Defaults to slo.latency_ms; when both are set it "
        "may be lower (degrade early), never higher.",
    )
    slo: LatencyObjective | None = Field(
        default=None,
        description="The model's latency objective: the fallback trigger, admission by "
        "predicted wait and the autoscaling policy's target.",
    )
    cache: bool = Field(
        default=True, description="Embeddings and rerank scores: use the ingress cache."
    )
    token_inputs: TokenInputsSetting = Field(
        default="openai",
        description="Embeddings: what an `input` of token-id arrays means. `openai`: ids of the "
        "OpenAI encoding `token_encoding` (OpenAI's meaning; what LangChain's OpenAIEmbeddings "
        "sends), decoded to text; `model_vocabulary`: ids of this model's own tokenizer "
        "(tokenizer.json in the model directory); `reject`: refused with a 400 that says what "
        "to send instead.",
    )
    token_encoding: TokenEncoding = Field(
        default="cl100k_base",
        description="Embeddings with token_inputs: openai: the encoding clients tokenize with "
        "(cl100k_base: LangChain's default and text-embedding-3; o200k_base: GPT-4o's).",
    )

    @model_validator(mode="after")
    def _torchscript_only_where_it_runs(self) -> ModelSpec:
        if self.task == "generation" and self.torchscript == "on":
            raise ValueError(
                "torchscript applies to embedding and classification models; generation runs "
                "eager generate() (use torchscript: auto or off)"
            )
        return self

    @model_validator(mode="after")
    def _parallel_passes_only_where_they_run(self) -> ModelSpec:
        if self.task == "generation" and self.parallel_passes > 1:
            raise ValueError(
                "parallel_passes applies to embedding and classification models; a generation "
                "replica runs one generate() per batch"
            )
        return self

    @model_validator(mode="after")
    def _length_grouping_only_where_it_runs(self) -> ModelSpec:
        if self.task == "generation" and self.length_grouping != "auto":
            raise ValueError(
                "length_grouping applies to embedding and classification models; generation "
                "splits a batch only where left padding would pass the model's context"
            )
        return self

    @model_validator(mode="after")
    def _generation_batching_only_where_it_runs(self) -> ModelSpec:
        if self.task != "generation" and self.model_fields_set & {
            "generation_batching",
            "kv_cache_tokens",
            "stream_interval",
        }:
            raise ValueError(
                "generation_batching, kv_cache_tokens and stream_interval apply to generation "
                f"models; this one's task is {self.task}"
            )
        if self.generation_batching == "static" and self.kv_cache_tokens is not None:
            raise ValueError(
                "kv_cache_tokens sizes the cache of continuous batching; with "
                "generation_batching: static each batch's generate() holds its own cache"
            )
        return self

    @model_validator(mode="after")
    def _token_inputs_only_for_embeddings(self) -> ModelSpec:
        chosen = self.model_fields_set & {"token_inputs", "token_encoding"}
        if self.task != "embedding" and chosen:
            raise ValueError(
                f"{' and '.join(sorted(chosen))} apply to embedding models; "
                f"this one's task is {self.task}"
            )
        if "token_encoding" in chosen and self.token_inputs != "openai":
            raise ValueError(
                f"token_encoding applies to token_inputs: openai; with token_inputs: "
                f"{self.token_inputs} no OpenAI encoding is used (remove token_encoding)"
            )
        return self

    @model_validator(mode="after")
    def _fallback_trigger_within_the_objective(self) -> ModelSpec:
        if self.slo is None or self.latency_target_ms is None:
            return self
        if self.latency_target_ms > self.slo.latency_ms:
            raise ValueError(
                f"latency_target_ms ({self.latency_target_ms:g}) is above slo.latency_ms "
                f"({self.slo.latency_ms:g}): the fallback would start only after the objective "
                f"is missed; lower latency_target_ms to at most {self.slo.latency_ms:g} or "
                "remove it (slo.latency_ms is then the trigger)"
            )
        return self

    def fallback_trigger(self) -> LatencyTrigger | None:
        """The latency past which requests go to `fallback` (None: latency never triggers it)."""
        if self.latency_target_ms is not None:
            percentile = self.slo.percentile if self.slo else DEFAULT_TRIGGER_PERCENTILE
            return LatencyTrigger(self.latency_target_ms, percentile)
        if self.slo is not None:
            return LatencyTrigger(self.slo.latency_ms, self.slo.percentile)
        return None

    @field_validator("deployment")
    @classmethod
    def _safe_deployment_name(cls, value: str | None) -> str | None:
        if value is not None and _DEPLOYMENT_NAME_UNSAFE.search(value):
            raise ValueError("use only letters, digits, '-' and '_'")
        return value

    @property
    def deployment_name(self) -> str:
        return self.deployment or _DEPLOYMENT_NAME_UNSAFE.sub("-", self.name).strip("-")

    def vocabulary_file(self) -> Path:
        """The model's tokenizer.json, which token_inputs: model_vocabulary decodes with."""
        path = self.resolve_path() / "tokenizer.json"
        if not path.is_file():
            raise ValueError(
                f"token_inputs: model_vocabulary needs {path} (a fast tokenizer's file); "
                "save the tokenizer with save_pretrained() or use token_inputs: openai or reject"
            )
        return path

    def source(self) -> ModelSource:
        """The loading options alone, which is all a model replica needs."""
        return ModelSource.model_validate(self.model_dump(include=set(ModelSource.model_fields)))


def _token_reading(spec: ModelSpec) -> str:
    """How a model reads token-id inputs, as the alias check compares it."""
    if spec.token_inputs == "openai":
        return f"token_inputs: openai with token_encoding: {spec.token_encoding}"
    return f"token_inputs: {spec.token_inputs}"


class AppArgs(BaseModel):
    """`applications[].args` in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[ModelSpec] = Field(min_length=1)
    aliases: list[AliasSpec] = Field(
        default_factory=list,
        description="Names that split traffic between served models of one task by weight.",
    )
    max_request_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    ingress_deployment: str = Field(default="Ingress")
    gateway: GatewayConfig = GatewayConfig()

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        for attribute in ("name", "deployment_name"):
            seen: set[str] = set()
            for spec in models:
                value = getattr(spec, attribute)
                if value in seen:
                    raise ValueError(
                        f"two models share the {attribute.replace('_', ' ')} {value!r}"
                    )
                seen.add(value)
        return models

    @model_validator(mode="after")
    def _fallbacks_are_served_models_of_the_same_task(self) -> AppArgs:
        tasks = {spec.name: spec.task for spec in self.models}
        for spec in self.models:
            if spec.fallback is None:
                continue
            if spec.fallback == spec.name:
                raise ValueError(f"model {spec.name!r} names itself as its fallback")
            if spec.fallback not in tasks:
                raise ValueError(
                    f"model {spec.name!r} falls back to unknown model {spec.fallback!r}"
                )
            if tasks[spec.fallback] != spec.task:
                raise ValueError(
                    f"model {spec.name!r} ({spec.task}) falls back to {spec.fallback!r} "
                    f"({tasks[spec.fallback]}); a fallback must serve the same task"
                )
        return self

    @model_validator(mode="after")
    def _aliases_point_at_models(self) -> AppArgs:
        tasks = {spec.name: spec.task for spec in self.models}
        seen: set[str] = set()
        for alias in self.aliases:
            if alias.name in tasks or alias.name in seen:
                raise ValueError(f"alias {alias.name!r} reuses the name of a model or alias")
            seen.add(alias.name)
            unknown = [t.model for t in alias.targets if t.model not in tasks]
            if unknown:
                raise ValueError(f"alias {alias.name!r} targets unknown models {unknown}")
            alias_tasks = {tasks[t.model] for t in alias.targets}
            if len(alias_tasks) > 1:
                raise ValueError(
                    f"alias {alias.name!r} mixes tasks {sorted(alias_tasks)}; "
                    "its targets must all serve one task"
                )
        return self

    @model_validator(mode="after")
    def _aliases_read_token_ids_one_way(self) -> AppArgs:
        # The alias picks a target per request: a client's ids must mean the same to every one.
        specs = {spec.name: spec for spec in self.models}
        for alias in self.aliases:
            readings = {_token_reading(specs[t.model]) for t in alias.targets if t.model in specs}
            if len(readings) > 1:
                raise ValueError(
                    f"alias {alias.name!r} targets models that read token-id inputs differently "
                    f"({'; '.join(sorted(readings))}); give its targets one setting"
                )
        return self


class ConfigError(ValueError):
    """A serve_config.yaml `args` block that cannot be deployed, with what to fix."""


def parse_args(raw: dict[str, Any] | AppArgs) -> AppArgs:
    """Validate `args`, naming each bad field as `models[0].task` and saying what is wrong."""
    if isinstance(raw, AppArgs):
        return raw
    try:
        args = AppArgs.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {_field_path(error['loc'])}: {error['msg']}" for error in exc.errors()]
        message = "invalid application args in serve_config.yaml:\n" + "\n".join(lines)
        raise ConfigError(message) from None
    problems = []
    for index, spec in enumerate(args.models):
        try:
            spec.resolve_path()
            if spec.token_inputs == "model_vocabulary":
                spec.vocabulary_file()
        except ValueError as exc:
            problems.append(f"  models[{index}] ({spec.name}): {exc}")
    if problems:
        raise ConfigError("invalid application args in serve_config.yaml:\n" + "\n".join(problems))
    return args


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "args"
