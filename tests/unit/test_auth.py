from pathlib import Path

import pytest

from serve_app.auth import KeyStore
from serve_app.errors import AuthenticationFailed
from serve_app.gateway_config import AuthConfig


def store(*keys: str) -> KeyStore:
    return KeyStore(list(keys))


def test_a_configured_key_authenticates_with_a_stable_loggable_id() -> None:
    keys = store("sk-alpha", "sk-beta")
    caller = keys.authenticate("Bearer sk-beta")
    assert caller == keys.authenticate("bearer  sk-beta ".replace("  ", " "))
    assert caller.key_id.startswith("key-")
    assert "sk-beta" not in caller.key_id
    assert keys.authenticate("Bearer sk-alpha") != caller


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Bearer sk-wrong", "invalid_api_key"),
        ("Basic c2stYWxwaGE=", "invalid_api_key"),
        ("Bearer ", "invalid_api_key"),
        ("sk-alpha", "invalid_api_key"),
    ],
)
def test_missing_or_wrong_keys_are_refused(header: str | None, code: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        store("sk-alpha").authenticate(header)
    assert caught.value.status_code == 401
    assert caught.value.code == code


def test_keys_are_kept_only_as_hashes() -> None:
    keys = store("sk-very-secret")
    assert all("sk-very-secret" not in repr(value) for value in vars(keys).values())


def test_keys_from_environment_and_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# team keys\nsk-file-1\n\nsk-file-2  # ci\n")
    config = AuthConfig(api_keys_env="MY_KEYS", api_keys_file=str(key_file))
    keys = KeyStore.from_config(config, environ={"MY_KEYS": "sk-env-1, sk-env-2,"})
    for key in ("sk-env-1", "sk-env-2", "sk-file-1", "sk-file-2"):
        keys.authenticate(f"Bearer {key}")
    assert keys.enabled


def test_no_keys_configured_means_open() -> None:
    assert not KeyStore.from_config(AuthConfig(), environ={}).enabled
    assert not KeyStore.from_config(AuthConfig(api_keys_env="UNSET"), environ={}).enabled


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="api_keys_file"):
        KeyStore.from_config(AuthConfig(api_keys_file=str(tmp_path / "nope")), environ={})
