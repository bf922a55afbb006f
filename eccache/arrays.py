"""Turning numpy arrays and torch tensors into (bytes, shape, dtype) and back, bit-exact (pure).

bfloat16 and float8 have no numpy dtype of their own: numpy arrays of those use ml_dtypes, and
torch tensors are viewed as uint8 so no conversion ever touches the bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from eccache.errors import InvalidArgument
from eccache.validation import DTYPE_ITEMSIZE

_NUMPY_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(getattr(ml_dtypes, name) if hasattr(ml_dtypes, name) else name)
    for name in DTYPE_ITEMSIZE
}


@dataclass(frozen=True, slots=True)
class Flat:
    """An array's bytes (a uint8 view, no copy where possible), shape and dtype name."""

    data: np.ndarray
    shape: tuple[int, ...]
    dtype: str


def is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "untyped_storage")


def flatten(array: Any) -> Flat:
    """Raises InvalidArgument for unsupported dtypes or objects."""
    if is_torch_tensor(array):
        tensor = array.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in DTYPE_ITEMSIZE:
            raise InvalidArgument(f"unsupported tensor dtype {dtype}")
        shape = tuple(tensor.shape)
        data = tensor.contiguous().reshape(-1).view(_torch().uint8).numpy()
        return Flat(data, shape, dtype)
    if isinstance(array, np.ndarray):
        dtype = array.dtype.name
        if dtype not in DTYPE_ITEMSIZE:
            raise InvalidArgument(f"unsupported array dtype {dtype}")
        contiguous = np.ascontiguousarray(array)
        return Flat(contiguous.reshape(-1).view(np.uint8), tuple(array.shape), dtype)
    raise InvalidArgument(f"expected a numpy array or torch tensor, got {type(array).__name__}")


def to_numpy(data: np.ndarray, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Views uint8 bytes as the entry's array (no copy)."""
    return data.view(_NUMPY_DTYPES[dtype]).reshape(shape)


def to_torch(data: np.ndarray, shape: tuple[int, ...], dtype: str) -> Any:
    torch = _torch()
    return torch.from_numpy(data).view(getattr(torch, dtype)).reshape(shape)


def _torch() -> Any:
    import torch

    return torch
