"""Namespace derivation: which model an embedding was made for (pure).

An entry is only ever served inside the namespace it was written to, so the namespace must change
whenever an embedding from one deployment would be wrong for another: model (id, or content of a local
checkpoint's config), revision, encoder dtype, output width, the multimodal config's hash, a format
version, and an optional user prefix (tenant). Producer and consumer derive it from their own vLLM config
and must agree: only fields that both roles share are used (not the producer-only measured width).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = "v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@+=\-]")
_MAX_LEN = 256


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """The fields of a vLLM config that decide whether two embeddings are interchangeable."""

    model: str
    revision: str
    dtype: str
    width: int
    mm_hash: str


def sanitize(part: str) -> str:
    """Maps a free-form string onto the namespace alphabet (letters, digits, . _ : @ + = -)."""
    return _UNSAFE.sub("_", part.strip()) or "_"


def derive_namespace(identity: ModelIdentity, prefix: str = "") -> str:
    """Builds `[prefix/]model@revision/dtype/wWIDTH/mmHASH/v1`, at most 256 characters.

    A too long model part is shortened with a digest of the full value, so distinct models stay distinct.
    """
    model = sanitize(identity.model)
    if len(model) > 120:
        model = model[:100] + "-" + hashlib.sha256(model.encode()).hexdigest()[:16]
    parts = [
        f"{model}@{sanitize(identity.revision or 'main')}",
        sanitize(identity.dtype),
        f"w{identity.width}",
        f"mm{identity.mm_hash[:12] or 'none'}",
        FORMAT_VERSION,
    ]
    if prefix:
        parts.insert(0, "/".join(sanitize(p) for p in prefix.split("/") if p))
    namespace = "/".join(parts)
    if len(namespace) > _MAX_LEN:
        digest = hashlib.sha256(namespace.encode()).hexdigest()[:32]
        namespace = namespace[: _MAX_LEN - 33] + "-" + digest
    return namespace


def local_model_fingerprint(path: str) -> str | None:
    """A digest of a local checkpoint: its config and weight file names and sizes; None if not a dir.

    Two checkpoints at different paths with the same content share a namespace; two different random
    checkpoints with one config do not (their weight sizes match, so the weight index content and the
    first bytes of each weight file are mixed in too).
    """
    if not os.path.isdir(path):
        return None
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            continue
        if name.endswith(".json"):
            with open(full, "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
        elif name.endswith((".safetensors", ".bin", ".pt")):
            with open(full, "rb") as f:
                head = f.read(1 << 20)
            digest.update(f"{name}\0{os.path.getsize(full)}\0".encode() + hashlib.sha256(head).digest())
    return digest.hexdigest()[:16]


def identity_from_vllm_config(vllm_config: Any) -> ModelIdentity:
    """Reads the model identity from a vLLM `VllmConfig` (duck-typed, so it works across versions)."""
    model_config = vllm_config.model_config
    model = str(model_config.model)
    fingerprint = local_model_fingerprint(model)
    if fingerprint is not None:
        model = f"{os.path.basename(os.path.normpath(model))}-{fingerprint}"
    dtype = str(model_config.dtype).removeprefix("torch.")
    try:
        width = int(model_config.get_hidden_size())
    except Exception:
        width = 0
    mm_config = getattr(model_config, "multimodal_config", None)
    mm_hash = ""
    if mm_config is not None and hasattr(mm_config, "compute_hash"):
        try:
            mm_hash = str(mm_config.compute_hash())
        except Exception:
            mm_hash = ""
    return ModelIdentity(
        model=model,
        revision=str(getattr(model_config, "revision", None) or "main"),
        dtype=dtype,
        width=width,
        mm_hash=mm_hash,
    )
