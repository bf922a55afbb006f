from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import eccache
from eccache import arrays
from eccache.errors import InvalidArgument


def test_public_names_are_pinned() -> None:
    assert eccache.__all__ == [
        "Acquired", "AsyncClient", "CapacityExhausted", "Client", "ECCacheError", "EntryInfo", "InProgress",
        "IntegrityError", "InvalidArgument", "LeaseExpired", "NotFound", "PutOutcome", "TransportError",
        "Unauthenticated", "Unavailable"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "int8", "float8_e4m3fn"])
def test_numpy_round_trip_is_bit_exact(dtype: str) -> None:
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 255, size=(7, 5 * np.dtype(getattr(ml_dtypes, dtype, dtype)).itemsize), dtype=np.uint8)
    src = raw.view(getattr(ml_dtypes, dtype, dtype))
    flat = arrays.flatten(src)
    back = arrays.to_numpy(flat.data.copy(), flat.shape, flat.dtype)
    assert back.dtype == src.dtype and back.shape == src.shape
    assert back.tobytes() == src.tobytes()


def test_torch_bfloat16_round_trip_is_bit_exact() -> None:
    torch = pytest.importorskip("torch")
    src = torch.randn(13, 7).to(torch.bfloat16)
    flat = arrays.flatten(src)
    assert flat.dtype == "bfloat16" and flat.shape == (13, 7)
    back = arrays.to_torch(flat.data.copy(), flat.shape, flat.dtype)
    assert torch.equal(back, src)


def test_unsupported_inputs_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        arrays.flatten([1, 2, 3])
    with pytest.raises(InvalidArgument):
        arrays.flatten(np.zeros(3, dtype=np.complex64))
