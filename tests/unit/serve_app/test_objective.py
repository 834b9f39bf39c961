from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from serve_app.config import AppArgs, ConfigError, ModelSpec
from serve_app.objective import (
    POLICY,
    apply_objectives,
    check_deployed_policies,
    main,
    policy_kwargs_for_objective,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def spec(**slo: object) -> ModelSpec:
    fields: dict[str, object] = {"name": "m", "task": "embedding", "package": "unused"}
    if slo:
        fields["slo"] = slo
    return ModelSpec.model_validate(fields)


KWARGS = {"target_queue_per_replica": 8}


@pytest.mark.parametrize(
    ("slo", "kwargs", "expected"),
    [
        ({}, KWARGS, KWARGS),  # no objective: kwargs as written
        (
            {"latency_ms": 250, "percentile": 95},
            KWARGS,
            {**KWARGS, "latency_target_ms": 250, "latency_percentile": 95},
        ),
        (  # a tighter policy target is allowed (replica latency leaves out the ingress)
            {"latency_ms": 250},
            {**KWARGS, "latency_target_ms": 200},
            {**KWARGS, "latency_target_ms": 200, "latency_percentile": 99},
        ),
    ],
)
def test_the_objective_fills_the_policy_target(
    slo: dict[str, object], kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert policy_kwargs_for_objective(spec(**slo), kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"latency_target_ms": 400},
            r"deployments\[m\].*latency_target_ms \(400\) is above the model's slo.latency_ms "
            r"\(250\).*remove it .* or set at most 250",
        ),
        (
            {"latency_percentile": 95},
            r"latency_percentile \(95\) differs from the model's slo.percentile \(99\); "
            r"remove it .* or set 99",
        ),
    ],
)
def test_policy_kwargs_that_contradict_the_objective_are_refused(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_kwargs_for_objective(spec(latency_ms=250), {**KWARGS, **kwargs})


def serve_config(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        "applications": [
            {
                "import_path": "serve_app.app:build_app",
                "args": {
                    "models": [
                        {
                            "name": "a/b",
                            "task": "embedding",
                            "package": "unused",
                            "slo": {"latency_ms": 300},
                        }
                    ]
                },
                "deployments": [
                    {
                        "name": "a-b",
                        "autoscaling_config": {
                            "policy": {"policy_function": POLICY, "policy_kwargs": policy_kwargs}
                        },
                    }
                ],
            }
        ]
    }


def test_a_serve_config_gets_each_models_objective_by_deployment_name() -> None:
    config = serve_config(dict(KWARGS))
    applied = apply_objectives(config)
    kwargs = applied["applications"][0]["deployments"][0]["autoscaling_config"]["policy"]
    assert kwargs["policy_kwargs"] == {
        **KWARGS,
        "latency_target_ms": 300,
        "latency_percentile": 99,
    }
    assert config == serve_config(dict(KWARGS))  # the input is left as it was


def test_a_serve_config_that_contradicts_an_objective_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"deployments\[a-b\]"):
        apply_objectives(serve_config({**KWARGS, "latency_target_ms": 301}))


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config.gpu.yaml"])
def test_the_shipped_serve_configs_agree_with_their_objectives(name: str) -> None:
    config = yaml.safe_load((REPO_ROOT / name).read_text())
    apply_objectives(config)


def test_the_command_refuses_a_contradiction_and_writes_the_filled_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(serve_config({**KWARGS, "latency_target_ms": 301})))
    assert main([str(bad)]) == 1
    assert "latency_target_ms (301) is above" in capsys.readouterr().err
    good, out = tmp_path / "good.yaml", tmp_path / "out.yaml"
    good.write_text(yaml.safe_dump(serve_config(dict(KWARGS))))
    assert main([str(good), str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    policy = written["applications"][0]["deployments"][0]["autoscaling_config"]["policy"]
    assert policy["policy_kwargs"]["latency_target_ms"] == 300


def deployed(
    kwargs: dict[str, Any], function: str = POLICY, min_replicas: int = 1
) -> dict[str, Any]:
    """The controller's view of one model deployment (`get_serve_details()`), policy applied."""
    policy = {"policy_function": function, "policy_kwargs": kwargs}
    autoscaling = {"min_replicas": min_replicas, "policy": policy}
    return {"m": {"deployment_config": {"autoscaling_config": autoscaling}}}


def test_the_running_service_refuses_a_deployed_policy_that_contradicts_the_objective() -> None:
    args = AppArgs(models=[spec(latency_ms=250)])
    check_deployed_policies(args, deployed({**KWARGS, "latency_target_ms": 250}))
    check_deployed_policies(args, deployed(KWARGS))  # absent: the policy itself requires it
    check_deployed_policies(args, deployed({"latency_target_ms": 900}, "other:Policy"))
    check_deployed_policies(args, {"m": {"deployment_config": {"num_replicas": 2}}})
    with pytest.raises(ConfigError, match=r"latency_target_ms \(300\) is above"):
        check_deployed_policies(args, deployed({**KWARGS, "latency_target_ms": 300}))
    with pytest.raises(ConfigError, match=r"latency_percentile \(95\) differs"):
        check_deployed_policies(args, deployed({**KWARGS, "latency_percentile": 95}))
    unbound = AppArgs(models=[spec()])  # no objective: nothing to contradict
    check_deployed_policies(unbound, deployed({**KWARGS, "latency_target_ms": 900}))


ZERO_DELAY = {**KWARGS, "downscale_to_zero_delay_s": 60}


def test_a_delay_to_zero_where_min_replicas_is_above_zero_is_refused_in_both_places() -> None:
    never = r"downscale_to_zero_delay_s \(60\) never acts: min_replicas is 1"
    config = serve_config(dict(ZERO_DELAY))
    with pytest.raises(ConfigError, match=r"deployments\[a-b\]\..*" + never):
        apply_objectives(config)  # Serve's default min_replicas: 1
    autoscaling = config["applications"][0]["deployments"][0]["autoscaling_config"]
    autoscaling["min_replicas"] = 0
    apply_objectives(config)
    for objective in (spec(), spec(latency_ms=250)):
        args = AppArgs(models=[objective])
        with pytest.raises(ConfigError, match=never):
            check_deployed_policies(args, deployed(ZERO_DELAY))
        check_deployed_policies(args, deployed(ZERO_DELAY, min_replicas=0))
        check_deployed_policies(args, deployed(KWARGS))  # no delay: nothing to contradict
        check_deployed_policies(args, deployed(ZERO_DELAY, "other:Policy"))
