"""How a streamed OpenAI answer opens: with output, or with an error before any output.

vLLM opens every chat stream with a role-only chunk, sent with the engine's first result, even when that
result is a failure (e.g. a metadata-only image whose embedding the cache could not serve): the client
then sees HTTP 200, the role chunk and an ``{"error": ...}`` event. Holding the opening events until one
carries output lets the proxy treat such an error like an HTTP error: nothing has reached the client, so
the request can still be re-sent (with its media).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

# An opening larger than this is passed on as it is: no answer sends that much before its first token.
MAX_OPENING_BYTES = 64 * 1024


class Opening(Enum):
    INCOMPLETE = "incomplete"  # only preamble events (or a partial event) so far: read more
    OUTPUT = "output"  # an event with output, the end of the stream, or anything not understood
    ERROR = "error"  # an error event before any output


@dataclass(frozen=True, slots=True)
class OpeningState:
    kind: Opening
    error: dict[str, Any] | None = None


def classify_opening(buffer: bytes) -> OpeningState:
    """Classifies the first bytes of an SSE body (pure; ``buffer`` holds everything received so far)."""
    if len(buffer) > MAX_OPENING_BYTES:
        return OpeningState(Opening.OUTPUT)
    text = buffer.replace(b"\r\n", b"\n")
    *complete, _partial = text.split(b"\n\n")
    for event in complete:
        data = _event_data(event)
        if data is None:
            continue  # a comment or keep-alive
        if data == b"[DONE]":
            return OpeningState(Opening.OUTPUT)
        try:
            obj = json.loads(data)
        except ValueError:
            return OpeningState(Opening.OUTPUT)
        if not isinstance(obj, dict):
            return OpeningState(Opening.OUTPUT)
        error = obj.get("error")
        if error is not None:
            return OpeningState(Opening.ERROR, error if isinstance(error, dict) else {"message": str(error)})
        if _carries_output(obj):
            return OpeningState(Opening.OUTPUT)
    return OpeningState(Opening.INCOMPLETE)


def _event_data(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _carries_output(chunk: dict[str, Any]) -> bool:
    """Whether a chunk is more than the role-only preamble (text, tool calls, a finish, or usage)."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices:
        return chunk.get("usage") is not None or not isinstance(choices, list)
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None or choice.get("text"):
            return True
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return True
        if any(value for key, value in delta.items() if key != "role"):
            return True
    return False
