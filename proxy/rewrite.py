"""Request bodies for each backend step (pure).

Given an analysed chat request and, per image part, the derived uuid plus what is known about the item
(placeholder metadata from eccache or the encoder, or nothing), build:

- the encoder request (cold images only, each with its uuid, bytes inlined as data: URLs);
- the PD request, either metadata-only ``image_embeds`` + uuid parts, or image + uuid parts (fallback);
- the P and D requests for both E → P → D conventions.

Only the containers that change are copied; the client's body is never mutated after analysis.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.routing import MediaRef


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """What PD gets for one image part."""

    ref: MediaRef
    uuid: str
    url: str                               # a URL PD can read without a second download (data: URL)
    metadata: Mapping[str, Any] | None     # placeholder metadata -> metadata-only part; None -> image + uuid


def image_part(url: str, uuid: str, original: Mapping[str, Any] | None = None) -> dict[str, Any]:
    image_url: dict[str, Any] = {"url": url}
    if original is not None:
        src = original.get("image_url")
        if isinstance(src, dict) and "detail" in src:
            image_url["detail"] = src["detail"]
    return {"type": "image_url", "image_url": image_url, "uuid": uuid}


def embeds_part(metadata: Mapping[str, Any], uuid: str) -> dict[str, Any]:
    return {"type": "image_embeds", "image_embeds": dict(metadata), "uuid": uuid}


def build_pd_body(body: Mapping[str, Any], items: Sequence[ItemPlan], *, metadata_only: bool) -> dict[str, Any]:
    """The body for PD/P/D with each image part replaced; ``metadata_only=False`` never uses embeds parts."""
    out = dict(body)
    messages = list(body["messages"])
    copied: dict[int, list[Any]] = {}
    for item in items:
        mi, pi = item.ref.message_index, item.ref.part_index
        content = copied.get(mi)
        if content is None:
            message = dict(messages[mi])
            content = list(message["content"])
            message["content"] = content
            messages[mi] = message
            copied[mi] = content
        original = content[pi]
        if metadata_only and item.metadata:
            content[pi] = embeds_part(item.metadata, item.uuid)
        else:
            content[pi] = image_part(item.url, item.uuid, original)
    out["messages"] = messages
    return out


def uses_metadata_only(items: Sequence[ItemPlan]) -> bool:
    return any(item.metadata for item in items)


def build_encoder_body(model: str, parts: Sequence[tuple[str, str]], extra: Mapping[str, Any]) -> dict[str, Any]:
    """An encoder request for ``(uuid, data_url)`` pairs; ``extra`` carries mm_processor_kwargs etc."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": [image_part(url, uuid) for uuid, url in parts]}],
        "max_tokens": 1,
        "stream": False,
    }
    for key in ("mm_processor_kwargs", "media_io_kwargs"):
        if extra.get(key):
            body[key] = copy.deepcopy(extra[key])
    return body


def _one_token(body: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out["max_tokens"] = 1
    if "max_completion_tokens" in out:
        out["max_completion_tokens"] = 1
    out["stream"] = False
    out.pop("stream_options", None)
    return out


def build_prefill_body_vllm(body: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM convention, step 1: P computes the prompt and keeps its KV for D."""
    out = _one_token(body)
    out["kv_transfer_params"] = {
        "do_remote_decode": True,
        "do_remote_prefill": False,
        "remote_engine_id": None,
        "remote_block_ids": None,
        "remote_host": None,
        "remote_port": None,
    }
    return out


def build_decode_body_vllm(body: Mapping[str, Any], kv_transfer_params: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM convention, step 2: D continues with the kv_transfer_params P returned."""
    out = dict(body)
    out["kv_transfer_params"] = dict(kv_transfer_params)
    return out


def build_decode_body_layerwise(body: Mapping[str, Any], metaserver_url: str, request_id: str) -> dict[str, Any]:
    """Layerwise convention, step 1: D first, told where to call back for its prefill."""
    out = dict(body)
    out["kv_transfer_params"] = {
        "do_remote_decode": False,
        "do_remote_prefill": True,
        "metaserver": metaserver_url,
        "request_id": request_id,
    }
    return out


def build_prefill_body_layerwise(body: Mapping[str, Any], d_params: Mapping[str, Any]) -> dict[str, Any]:
    """Layerwise convention, step 2 (from the metaserver): P gets D's parameters and pushes KV to it."""
    out = _one_token(body)
    params = {k: v for k, v in d_params.items() if k != "metaserver"}
    params["do_remote_decode"] = True
    params["do_remote_prefill"] = False
    out["kv_transfer_params"] = params
    return out
