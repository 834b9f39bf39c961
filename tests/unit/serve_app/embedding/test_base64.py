import base64

import numpy as np

from serve_app.embedding.route import from_base64, to_base64


def test_base64_round_trip_is_exact() -> None:
    vector = np.array([0.1, -2.5, 3.25e-8, 1e30], dtype=np.float32)
    assert np.array_equal(from_base64(to_base64(vector)), vector)


def test_base64_is_little_endian_float32_like_openai() -> None:
    raw = base64.b64decode(to_base64(np.array([1.0], dtype=np.float32)))
    assert raw == b"\x00\x00\x80\x3f"


def test_float64_input_is_stored_as_float32() -> None:
    assert len(base64.b64decode(to_base64(np.zeros(3)))) == 12
