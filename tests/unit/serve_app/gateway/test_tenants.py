"""Tenants from their file, and keys joining them from the keys file; both refused with what
to fix when they cannot be right."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.gateway.auth import KeyStore
from serve_app.gateway.config import AuthConfig, TenantsConfig
from serve_app.gateway.fair_queue import Share
from serve_app.gateway.tenants import DEFAULT_TENANT, Tenants


def tenants_from(tmp_path: Path, text: str) -> Tenants | None:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    return Tenants.from_config(TenantsConfig(file=str(path)))


def test_no_file_means_no_tenants() -> None:
    assert Tenants.from_config(TenantsConfig()) is None


def test_declared_tenants_with_weights_priorities_and_a_default(tmp_path: Path) -> None:
    tenants = tenants_from(tmp_path, "tenants:\n  search: {weight: 4, priority: high}\n")
    assert tenants is not None
    assert tenants.share("search") == Share(4.0, rank=0)
    assert tenants.share(DEFAULT_TENANT) == Share(1.0, rank=1)
    assert tenants.names() == ["default", "search"]


def test_the_default_tenant_can_be_given_its_own_weight(tmp_path: Path) -> None:
    tenants = tenants_from(tmp_path, "tenants:\n  default: {weight: 0.5, priority: low}\n")
    assert tenants is not None
    assert tenants.share(DEFAULT_TENANT) == Share(0.5, rank=2)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tenants:\n  a: {weight: 0}\n", r"tenants\.a\.weight: Input should be greater than 0"),
        ("tenants:\n  a: {weight: -2}\n", "greater than 0"),
        ("tenants:\n  a: {}\n", r"tenants\.a\.weight: Field required"),
        ("tenants:\n  a: {weight: 1, priority: urgent}\n", "priority"),
        ("tenants:\n  a: {weight: 1, share: 2}\n", "share"),
        ("tenants: {}\n", "at least 1"),
        ("tenants:\n  'a b': {weight: 1}\n", "name"),
        ("tenant:\n  a: {weight: 1}\n", "tenant"),
        ("tenants: [a\n", "not valid YAML"),
    ],
)
def test_a_wrong_tenants_file_is_refused_with_the_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        tenants_from(tmp_path, text)
    assert "tenants.yaml" in str(caught.value)


def test_a_missing_tenants_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"gateway\.tenants\.file: .*nope\.yaml does not exist"):
        Tenants.from_config(TenantsConfig(file=str(tmp_path / "nope.yaml")))


def keys_file(tmp_path: Path, text: str) -> AuthConfig:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    return AuthConfig(api_keys_file=str(path))


def test_keys_join_the_tenant_named_on_their_line(tmp_path: Path) -> None:
    tenants = tenants_from(tmp_path, "tenants:\n  search: {weight: 4}\n")
    config = keys_file(tmp_path, "sk-search\tsearch  # the search team\nsk-other\n")
    keys = KeyStore.from_config(config, {"ENV_KEYS": "sk-env"}, tenants)
    assert keys.authenticate("Bearer sk-search").tenant == "search"
    assert keys.authenticate("Bearer sk-other").tenant == DEFAULT_TENANT


@pytest.mark.parametrize(
    ("line", "declared", "problem"),
    [
        ("sk-a nobody", True, "line 1: unknown tenant 'nobody'; declared: default, search"),
        ("sk-a search", False, "names tenant 'search', but gateway.tenants.file is not set"),
        ("sk-a search extra", True, "not more words"),
    ],
)
def test_a_key_naming_a_tenant_that_cannot_be_is_refused_by_line(
    tmp_path: Path, line: str, declared: bool, problem: str
) -> None:
    tenants = tenants_from(tmp_path, "tenants:\n  search: {weight: 4}\n") if declared else None
    with pytest.raises(ValueError, match=problem):
        KeyStore.from_config(keys_file(tmp_path, line + "\n"), {}, tenants)
