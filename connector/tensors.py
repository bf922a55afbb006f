"""Entry bytes ↔ torch tensors, and where a worker's tensors live (pure torch, no I/O)."""

from __future__ import annotations

import math
from typing import Any

import torch

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of an entry dtype string ("bfloat16", ...); None for dtypes embeddings never use."""
    return _TORCH_DTYPES.get(name.removeprefix("torch."))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def entry_is_well_formed(info: Any) -> bool:
    """An embedding entry is 2-D `[num_embeds, width]` of a float dtype whose size matches nbytes."""
    dtype = torch_dtype(info.dtype)
    if dtype is None or len(info.shape) != 2 or min(info.shape) <= 0:
        return False
    return bool(math.prod(info.shape) * dtype.itemsize == info.nbytes)


def view_as_entry(buffer: torch.Tensor, info: Any) -> torch.Tensor:
    """Reinterprets the first `info.nbytes` bytes of a uint8 tensor as the entry's tensor (no copy)."""
    dtype = torch_dtype(info.dtype)
    assert dtype is not None
    return buffer[: info.nbytes].view(dtype).view(tuple(info.shape))


def worker_device() -> torch.device:
    """The device this worker process computes on: `cuda:N`, `npu:N` or cpu (from vLLM's platform)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:  # pragma: no cover
        return torch.device("cpu")
    device_type = str(current_platform.device_type)
    if device_type == "cpu":
        return torch.device("cpu")
    try:
        if current_platform.is_cuda_alike():
            return torch.device(f"{device_type}:{current_platform.current_device()}")
        module = getattr(torch, device_type, None)  # torch_npu registers torch.npu
        if module is not None and hasattr(module, "current_device"):
            return torch.device(f"{device_type}:{module.current_device()}")
    except Exception:  # noqa: BLE001
        pass
    return torch.device(device_type)
