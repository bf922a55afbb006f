"""Request analysis and path choice (pure).

``analyze_chat`` validates an OpenAI chat request, finds its media items, counts its text, and removes what
a client must not control (``uuid`` on parts, ``kv_transfer_params``, ``ec_transfer_params``).
``choose_path`` picks the serving path: text-only requests go to P/PD directly, multimodal ones take an
encoder step first. The HTTP layer only calls these; it holds no routing logic.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import BadRequest

# Client-supplied keys that would let a client steer KV/EC transfers; always removed.
_FORBIDDEN_TOP_LEVEL = ("kv_transfer_params", "ec_transfer_params")
# Keys with which vLLM hashes (model, uuid, kwargs) instead of using the uuid verbatim.
_IDENTIFIER_KWARGS = ("mm_processor_kwargs", "media_io_kwargs")
_PASSTHROUGH_MEDIA = frozenset({"input_audio", "audio_url", "video_url", "file"})
# Deepest JSON nesting accepted in a request body (OpenAI requests need < 20; tool schemas a little more).
MAX_JSON_DEPTH = 64
_MAX_INT = 2**31 - 1

# Types of the well-known request fields (anything else passes through for the backend to judge).
# kinds: pos_int (1.._MAX_INT), int, number (finite), bool, str, dict, list, str_list (str or list of str),
# str_dict (str or object). None is always accepted (= not set).
_FIELD_KINDS: dict[str, str] = {
    "max_tokens": "pos_int", "max_completion_tokens": "pos_int", "n": "pos_int", "best_of": "pos_int",
    "top_k": "int", "seed": "int", "top_logprobs": "int", "min_tokens": "int", "truncate_prompt_tokens": "int",
    "temperature": "number", "top_p": "number", "min_p": "number", "presence_penalty": "number",
    "frequency_penalty": "number", "repetition_penalty": "number", "length_penalty": "number",
    "echo": "bool", "ignore_eos": "bool", "skip_special_tokens": "bool", "add_generation_prompt": "bool",
    "continue_final_message": "bool", "parallel_tool_calls": "bool",
    "user": "str", "suffix": "str", "request_id": "str",
    "stream_options": "dict", "response_format": "dict", "logit_bias": "dict", "mm_processor_kwargs": "dict",
    "media_io_kwargs": "dict", "chat_template_kwargs": "dict", "metadata": "dict",
    "tools": "list", "stop_token_ids": "list", "stop": "str_list", "tool_choice": "str_dict",
}


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH, check_text: bool = False) -> str | None:
    """What makes parsed JSON unacceptable, or None: lists/objects nested deeper than ``max_depth``, or
    (``check_text``) a string or key holding a lone surrogate (a legal JSON escape that is not Unicode text;
    backends fail on it). Iterative: never recurses, whatever the depth."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if check_text and not _is_text(node):
                return "a string holds an unpaired surrogate (\\ud800-\\udfff)"
            continue
        if isinstance(node, dict):
            children: list[Any] = [*node.keys(), *node.values()] if check_text else list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return f"JSON body nested deeper than {max_depth} levels"
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)) or (check_text and isinstance(child, str)))
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind_ok(kind: str, value: Any) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "pos_int":
        return is_int and 1 <= int(value) <= _MAX_INT
    if kind == "int":
        return is_int and -(2**63) <= int(value) < 2**63
    if kind == "number":
        if is_int:
            return abs(int(value)) <= 2**53
        return isinstance(value, float) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    if kind == "str_list":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if kind == "str_dict":
        return isinstance(value, (str, dict))
    raise AssertionError(kind)


_KIND_TEXT = {"pos_int": "an integer from 1 to 2147483647", "int": "an integer", "number": "a finite number",
              "bool": "a boolean", "str": "a string", "dict": "an object", "list": "a list",
              "str_list": "a string or a list of strings", "str_dict": "a string or an object"}


def check_field_types(body: dict[str, Any]) -> None:
    """Raise BadRequest naming the first well-known field whose value has the wrong type."""
    for name, kind in _FIELD_KINDS.items():
        value = body.get(name)
        if value is not None and not _kind_ok(kind, value):
            raise BadRequest(f"'{name}' must be {_KIND_TEXT[kind]}")


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
    check_field_types(body)
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
        if message.get("name") is not None and not isinstance(message.get("name"), str):
            raise BadRequest(f"messages[{mi}].name must be a string")
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
    check_field_types(body)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars = len(prompt)
    elif isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            chars = sum(len(p) for p in prompt)
        elif all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            chars = 4 * len(prompt)  # token ids: about 4 characters each
        elif all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
                 for p in prompt):
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
