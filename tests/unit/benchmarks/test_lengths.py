"""The mixed-length benchmark's inputs and its per-setting Serve configs."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.lengths import config_with_grouping
from benchmarks.payloads import make_mixed_length_texts
from serve_app.config import AppArgs

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_mixed_texts_are_seeded_queries_and_passages() -> None:
    texts = make_mixed_length_texts(2_000, seed=3)
    assert texts == make_mixed_length_texts(2_000, seed=3)
    assert texts != make_mixed_length_texts(2_000, seed=4)
    words = [len(text.split()) for text in texts]
    short = [n for n in words if n <= 30]
    long = [n for n in words if n >= 60]
    assert len(short) + len(long) == len(texts)  # nothing in between
    assert min(words) == 5
    assert max(words) == 240
    assert 0.26 < len(long) / len(texts) < 0.34


def test_config_copy_sets_grouping_on_every_model_and_stays_valid(tmp_path: Path) -> None:
    dest = config_with_grouping(REPO_ROOT / "serve_config.yaml", "off", tmp_path / "c.yaml")
    config = yaml.safe_load(dest.read_text())
    original = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    args = config["applications"][0]["args"]
    assert [m["length_grouping"] for m in args["models"]] == ["off"] * len(args["models"])
    assert AppArgs.model_validate(args).models[0].length_grouping == "off"
    for model in args["models"]:
        del model["length_grouping"]
    for model in original["applications"][0]["args"]["models"]:
        model.pop("length_grouping", None)
    assert config == original  # nothing else changed
