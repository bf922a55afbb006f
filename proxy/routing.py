"""Request analysis and path choice (pure).

``analyze_chat`` validates an OpenAI chat request, finds its media items, counts its text, and removes what
a client must not control (``uuid`` on parts, ``kv_transfer_params``, ``ec_transfer_params``).
``choose_path`` picks the serving path: text-only requests go to P/PD directly, multimodal ones take an
encoder step first. The HTTP layer only calls these; it holds no routing logic.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import BadRequest

# Client-supplied keys that would let a client steer KV/EC transfers; always removed.
_FORBIDDEN_TOP_LEVEL = ("kv_transfer_params", "ec_transfer_params")
# Keys with which vLLM hashes (model, uuid, kwargs) instead of using the uuid verbatim.
_IDENTIFIER_KWARGS = ("mm_processor_kwargs", "media_io_kwargs")
_PASSTHROUGH_MEDIA = frozenset({"input_audio", "audio_url", "video_url", "file"})


class Path(enum.Enum):
    PD = "pd"            # text-only, combined prefill-decode
    P_D = "p_d"          # text-only, disaggregated prefill then decode
    E_PD = "e_pd"        # multimodal: encoder step, then PD
    E_P_D = "e_p_d"      # multimodal: encoder step, then P and D


class Convention(enum.Enum):
    VLLM = "vllm"            # P first (max_tokens=1, do_remote_decode), then D with P's kv_transfer_params
    LAYERWISE = "layerwise"  # D first with a metaserver; D calls back; the proxy then dispatches P


@dataclass(frozen=True, slots=True)
class MediaRef:
    """Where an image part sits in the request: ``messages[message_index].content[part_index]``."""

    message_index: int
    part_index: int
    url: str


@dataclass(slots=True, kw_only=True)
class ChatRequest:
    """An analysed chat request. ``body`` is the (sanitised) JSON object; ``modified`` says whether it
    differs from what the client sent (if not, the original bytes can be forwarded unchanged)."""

    body: dict[str, Any]
    model: str
    stream: bool
    media: list[MediaRef] = field(default_factory=list)
    text_chars: int = 0
    identifier_predictable: bool = True
    modified: bool = False

    @property
    def has_media(self) -> bool:
        return bool(self.media)


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string")
    return model


def _stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    return stream


def _strip_forbidden(body: dict[str, Any]) -> bool:
    modified = False
    for key in _FORBIDDEN_TOP_LEVEL:
        if key in body:
            del body[key]
            modified = True
    return modified


def analyze_chat(body: Any, *, max_media_items: int = 32) -> ChatRequest:
    """Validate and sanitise a chat completion request (mutates ``body`` in place).

    Raises:
        BadRequest: not a JSON object, missing/invalid model or messages, bad parts, too many media items,
            or client-sent ``image_embeds`` parts (they would let a client read cache entries by uuid).
    """
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = _require_model(body)
    stream = _stream_flag(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    modified = _strip_forbidden(body)
    media: list[MediaRef] = []
    text_chars = 0
    for mi, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{mi}] must be an object")
        if not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{mi}].role must be a string")
        content = message.get("content")
        if content is None:
            continue
        if isinstance(content, str):
            text_chars += len(content)
            continue
        if not isinstance(content, list):
            raise BadRequest(f"messages[{mi}].content must be a string or a list of parts")
        for pi, part in enumerate(content):
            if not isinstance(part, dict):
                raise BadRequest(f"messages[{mi}].content[{pi}] must be an object")
            kind = part.get("type")
            if not isinstance(kind, str):
                raise BadRequest(f"messages[{mi}].content[{pi}].type must be a string")
            if "uuid" in part:
                del part["uuid"]  # never trust client uuids: vLLM uses them verbatim as cache keys
                modified = True
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise BadRequest(f"messages[{mi}].content[{pi}].text must be a string")
                text_chars += len(text)
            elif kind == "image_url":
                media.append(MediaRef(mi, pi, _image_url_of(part, mi, pi)))
            elif kind == "image_embeds":
                raise BadRequest("'image_embeds' parts are not accepted by this proxy")
            elif kind in _PASSTHROUGH_MEDIA:
                continue  # not cached by the proxy: PD handles it
    if len(media) > max_media_items:
        raise BadRequest(f"too many media items ({len(media)} > {max_media_items})")
    predictable = not any(body.get(k) for k in _IDENTIFIER_KWARGS)
    return ChatRequest(body=body, model=model, stream=stream, media=media, text_chars=text_chars,
                       identifier_predictable=predictable, modified=modified)


def _image_url_of(part: dict[str, Any], mi: int, pi: int) -> str:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise BadRequest(f"messages[{mi}].content[{pi}].image_url.url must be a non-empty string")
    return url


@dataclass(slots=True, kw_only=True)
class CompletionRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    text_chars: int
    modified: bool


def analyze_completion(body: Any) -> CompletionRequest:
    """Validate and sanitise a ``/v1/completions`` request (text path only).

    Raises:
        BadRequest: not an object, bad model, or a missing/invalid prompt.
    """
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = _require_model(body)
    stream = _stream_flag(body)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars = len(prompt)
    elif isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            chars = sum(len(p) for p in prompt)
        elif all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            chars = 4 * len(prompt)  # token ids: about 4 characters each
        elif all(isinstance(p, list) for p in prompt):
            chars = 4 * sum(len(p) for p in prompt)
        else:
            raise BadRequest("'prompt' must be a string, a list of strings or token ids")
    else:
        raise BadRequest("'prompt' must be a non-empty string or list")
    modified = _strip_forbidden(body)
    return CompletionRequest(body=body, model=model, stream=stream, text_chars=chars, modified=modified)


def choose_path(*, has_media: bool, disaggregated: bool) -> Path:
    """The serving path: text-only skips the encoder; ``disaggregated`` means separate P and D pools."""
    if has_media:
        return Path.E_P_D if disaggregated else Path.E_PD
    return Path.P_D if disaggregated else Path.PD


def requested_max_tokens(body: dict[str, Any]) -> object:
    """``max_completion_tokens`` if set, else ``max_tokens`` (None if neither)."""
    value = body.get("max_completion_tokens")
    return value if value is not None else body.get("max_tokens")
