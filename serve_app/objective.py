"""A model's latency objective as the autoscaling policy's target.

Serve builds the policy from `policy_kwargs` in serve_config.yaml's `deployments:` block, which
replaces whatever the application builder sets, and the builder never sees that block. So the
objective reaches the policy here, where a whole serve config is read: kwargs left out are filled
from `slo`, and kwargs that contradict it are refused with what to change. The running service
checks again: each ingress replica, as it starts, reads the kwargs Serve applied to its models'
deployments (however they were deployed) and refuses to start on a contradiction, so
`serve deploy` of such a config fails with the same message.

Both places also refuse a `downscale_to_zero_delay_s` on a deployment whose `min_replicas` is
above zero: it would never act, and whoever wrote it expects the deployment to go to zero.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from serve_app.config import AppArgs, ConfigError, ModelSpec

BUILDER = "serve_app.app:build_app"
POLICY = "autoscaling.policy:QueueLatencyPolicy"


def policy_kwargs_for_objective(spec: ModelSpec, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`kwargs` with `latency_target_ms` and `latency_percentile` taken from `spec.slo` where
    absent. The policy may hold a tighter target than the objective (replica latency leaves out
    the ingress), never a looser one, and only at the objective's percentile."""
    filled = dict(kwargs)
    slo = spec.slo
    if slo is None:
        return filled
    where = f"deployments[{spec.deployment_name}].autoscaling_config.policy.policy_kwargs"
    target_ms = filled.setdefault("latency_target_ms", slo.latency_ms)
    if not isinstance(target_ms, int | float) or target_ms > slo.latency_ms:
        raise ConfigError(
            f"{where}.latency_target_ms ({target_ms}) is above the model's slo.latency_ms "
            f"({slo.latency_ms:g}): the policy would let latency pass the objective before "
            f"adding replicas; remove it (the objective supplies it) or set at most "
            f"{slo.latency_ms:g}"
        )
    percentile = filled.setdefault("latency_percentile", slo.percentile)
    if percentile != slo.percentile:
        raise ConfigError(
            f"{where}.latency_percentile ({percentile}) differs from the model's slo.percentile "
            f"({slo.percentile}); remove it (the objective supplies it) or set {slo.percentile}"
        )
    return filled


def _our_policy(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `autoscaling_config.policy` of a deployment's options when it is this project's
    policy, else None."""
    policy = (options.get("autoscaling_config") or {}).get("policy") or {}
    return policy if policy.get("policy_function") == POLICY else None


def check_scale_to_zero(deployment: str, options: Mapping[str, Any]) -> None:
    """ConfigError where our policy's `downscale_to_zero_delay_s` is set on a deployment
    (`options`: its config, with `autoscaling_config`) that never goes to zero."""
    policy = _our_policy(options)
    kwargs = (policy or {}).get("policy_kwargs") or {}
    if kwargs.get("downscale_to_zero_delay_s") is None:
        return
    # Serve's default min_replicas is 1.
    min_replicas = (options.get("autoscaling_config") or {}).get("min_replicas", 1)
    if min_replicas > 0:
        raise ConfigError(
            f"deployments[{deployment}].autoscaling_config.policy.policy_kwargs."
            f"downscale_to_zero_delay_s ({kwargs['downscale_to_zero_delay_s']}) never acts: "
            f"min_replicas is {min_replicas}, so the deployment never goes to zero; set "
            f"autoscaling_config.min_replicas: 0 to scale it to zero, or remove the delay"
        )


def check_deployed_policies(args: AppArgs, deployments: Mapping[str, Mapping[str, Any]]) -> None:
    """ConfigError where the policy kwargs applied to a model's deployment contradict the
    model's objective or the deployment's `min_replicas`; `deployments` is the controller's view
    of the application's deployments (`get_serve_details()`), whose `deployment_config` holds
    what `serve deploy` set."""
    for spec in args.models:
        config = (deployments.get(spec.deployment_name) or {}).get("deployment_config") or {}
        check_scale_to_zero(spec.deployment_name, config)
        policy = _our_policy(config)
        if policy is not None and spec.slo is not None:
            policy_kwargs_for_objective(spec, policy.get("policy_kwargs") or {})


def apply_objectives(config: Mapping[str, Any]) -> dict[str, Any]:
    """A serve config (serve_config.yaml as a dict) whose QueueLatencyPolicy kwargs carry each
    model's objective; ConfigError where they contradict it or their deployment's
    `min_replicas`."""
    result = copy.deepcopy(dict(config))
    for app in result.get("applications", []):
        if app.get("import_path") != BUILDER:
            continue
        specs = {
            spec.deployment_name: spec
            for spec in AppArgs.model_validate(app.get("args", {})).models
        }
        for deployment in app.get("deployments", []):
            check_scale_to_zero(deployment.get("name", "?"), deployment)
            spec = specs.get(deployment.get("name", ""))
            policy = _our_policy(deployment)
            if spec is None or policy is None:
                continue
            policy["policy_kwargs"] = policy_kwargs_for_objective(
                spec, policy.get("policy_kwargs") or {}
            )
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m serve_app.objective serve_config.yaml [out.yaml]`: exit 1 with the message when
    a policy contradicts its model's objective; with `out.yaml`, write the config with each
    objective filled into its policy's kwargs (what to `serve run` or `serve deploy`)."""
    import argparse
    import sys
    from pathlib import Path

    import yaml

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("out", type=Path, nargs="?")
    options = parser.parse_args(argv)
    try:
        applied = apply_objectives(yaml.safe_load(options.config.read_text()))
    except (ConfigError, ValueError) as exc:
        print(f"{options.config}: {exc}", file=sys.stderr)
        return 1
    if options.out is not None:
        options.out.write_text(yaml.safe_dump(applied, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
