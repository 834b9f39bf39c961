"""A model's latency objective as the autoscaling policy's target.

Serve builds the policy from `policy_kwargs` in serve_config.yaml's `deployments:` block, which
replaces whatever the application builder sets, and the builder never sees that block. So the
objective reaches the policy here, where a whole serve config is read: kwargs left out are filled
from `slo`, and kwargs that contradict it are refused with what to change. The running service
checks again: each ingress replica, as it starts, reads the kwargs Serve applied to its models'
deployments (however they were deployed) and refuses to start on a contradiction, so
`serve deploy` of such a config fails with the same message.
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


def check_deployed_policies(args: AppArgs, deployments: Mapping[str, Mapping[str, Any]]) -> None:
    """ConfigError where a model's objective contradicts the policy kwargs applied to its
    deployment; `deployments` is the controller's view of the application's deployments
    (`get_serve_details()`), whose `deployment_config` holds what `serve deploy` set."""
    for spec in args.models:
        if spec.slo is None:
            continue
        config = (deployments.get(spec.deployment_name) or {}).get("deployment_config") or {}
        policy = _our_policy(config)
        if policy is not None:
            policy_kwargs_for_objective(spec, policy.get("policy_kwargs") or {})


def apply_objectives(config: Mapping[str, Any]) -> dict[str, Any]:
    """A serve config (serve_config.yaml as a dict) whose QueueLatencyPolicy kwargs carry each
    model's objective; ConfigError where they contradict it."""
    result = copy.deepcopy(dict(config))
    for app in result.get("applications", []):
        if app.get("import_path") != BUILDER:
            continue
        specs = {
            spec.deployment_name: spec
            for spec in AppArgs.model_validate(app.get("args", {})).models
        }
        for deployment in app.get("deployments", []):
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
