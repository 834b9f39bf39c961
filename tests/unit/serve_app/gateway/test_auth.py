from pathlib import Path

import pytest

from serve_app.errors import APIError, AuthenticationFailed
from serve_app.gateway.auth import FailedAuthLimit, KeyStore
from serve_app.gateway.config import AuthConfig


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


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("sk-ab#cd", "contains '#'"),
        ("sk-clé", "printable ASCII"),
        ("sk-\u00a0x", "printable ASCII"),
    ],
)
def test_a_key_file_line_that_could_never_match_is_refused_at_start_by_number(
    tmp_path: Path, line: str, problem: str
) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# team keys\nsk-good\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=problem) as caught:
        KeyStore.from_config(AuthConfig(api_keys_file=str(key_file)), environ={})
    assert f"{key_file} line 3" in str(caught.value)


def test_a_bad_key_in_the_environment_is_refused_by_position() -> None:
    with pytest.raises(ValueError, match=r"key 2 of \$MY_KEYS") as caught:
        KeyStore.from_config(AuthConfig(api_keys_env="MY_KEYS"), environ={"MY_KEYS": "sk-a,sk#b"})
    assert "'#'" in str(caught.value)


def test_a_non_ascii_presented_key_is_a_plain_401() -> None:
    with pytest.raises(AuthenticationFailed):
        store("sk-alpha").authenticate("Bearer sk-alphä")


def test_failed_attempts_come_back_with_time() -> None:
    now = [0.0]
    limit = FailedAuthLimit(
        AuthConfig(failed_attempts_burst=2, failed_attempts_per_min=60), clock=lambda: now[0]
    )
    keys = store("sk-alpha")

    def status(key: str, address: str = "10.0.0.1") -> int:
        try:
            limit.authenticate(keys, f"Bearer {key}", address)
        except APIError as error:
            return error.status_code
        return 200

    assert [status("sk-x") for _ in range(3)] == [401, 401, 429]
    assert status("sk-x", address="10.0.0.2") == 401  # another address has its own budget
    assert status("sk-alpha") == 429  # never used from 10.0.0.1 before it was blocked
    now[0] += 1.0  # one attempt per second comes back
    assert status("sk-alpha") == 200
    assert status("sk-x") == 401
    assert status("sk-x") == 429
    assert status("sk-alpha") == 200  # known from this address now
