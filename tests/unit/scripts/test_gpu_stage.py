"""scripts/gpu_stage.py: files packed into size-limited parts come back byte for byte, and a
missing or damaged part is refused."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.script_modules import load_script

PART_BYTES = 300


@pytest.fixture(scope="module")
def gpu_stage() -> ModuleType:
    return load_script("gpu_stage")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "wheels"
    src.mkdir()
    for name, size in [("a.whl", 1000), ("b.whl", 0), ("c.whl", 10), ("d.whl", 250)]:
        (src / name).write_bytes(os.urandom(size))
    return src


def test_parts_stay_under_the_limit_and_unpack_to_the_same_bytes(
    gpu_stage: ModuleType, source: Path, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    gpu_stage.pack(source, stage, PART_BYTES)
    parts = sorted(stage.iterdir())
    total = sum(p.stat().st_size for p in source.iterdir())
    assert [p.name for p in parts] == [
        f"part{n}" for n in range(1, math.ceil(total / PART_BYTES) + 1)
    ]
    for part in parts:
        chunk_bytes = sum(f.stat().st_size for f in part.iterdir() if f.name != "manifest.json")
        assert chunk_bytes <= PART_BYTES
    assert (parts[-1] / "manifest.json").is_file()

    rebuilt = gpu_stage.unpack(stage, tmp_path / "out")
    assert sorted(p.name for p in rebuilt) == sorted(p.name for p in source.iterdir())
    for path in rebuilt:
        assert path.read_bytes() == (source / path.name).read_bytes()


def test_a_part_that_has_not_arrived_is_named(
    gpu_stage: ModuleType, source: Path, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    gpu_stage.pack(source, stage, PART_BYTES)
    shutil.rmtree(stage / "part2")
    with pytest.raises(FileNotFoundError, match="part2"):
        gpu_stage.unpack(stage, tmp_path / "out")


def test_a_damaged_chunk_fails_its_file(
    gpu_stage: ModuleType, source: Path, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    gpu_stage.pack(source, stage, PART_BYTES)
    chunk = stage / "part1" / "a.whl.000"
    chunk.write_bytes(bytes(len(chunk.read_bytes())))
    with pytest.raises(ValueError, match=r"a\.whl does not match"):
        gpu_stage.unpack(stage, tmp_path / "out")
