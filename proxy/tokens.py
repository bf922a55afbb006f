"""Token estimation for load balancing (pure).

The balancer weighs instances by active *estimated* tokens. Text is estimated from characters; an image from
its pixel size: ``ceil(h / px) * ceil(w / px)`` where ``px`` is the pixels per visual token of the model
family (28 for Qwen2/2.5-VL, 32 for Qwen3-VL). Estimates only steer balancing; they never limit requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PX_PER_TOKEN_BY_FAMILY: dict[str, int] = {"qwen2-vl": 28, "qwen2.5-vl": 28, "qwen3-vl": 32}


def px_for_family(family: str) -> int:
    """Pixels per visual token for a model family name (case-insensitive); raises KeyError if unknown."""
    return PX_PER_TOKEN_BY_FAMILY[family.lower()]


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenEstimator:
    """Estimates work in tokens.

    Args:
        chars_per_token: characters of text per token.
        px_per_token: image pixels per visual token along one side.
        unknown_image_tokens: estimate for an image whose size could not be read.
        default_max_tokens: output tokens assumed when a request sets no ``max_tokens``.
        max_output_estimate: cap on the output tokens counted for one request.
    """

    chars_per_token: float = 4.0
    px_per_token: int = 28
    unknown_image_tokens: int = 1024
    default_max_tokens: int = 256
    max_output_estimate: int = 4096

    def __post_init__(self) -> None:
        if self.chars_per_token <= 0:
            raise ValueError("chars_per_token must be > 0")
        if self.px_per_token <= 0:
            raise ValueError("px_per_token must be > 0")
        if self.unknown_image_tokens < 0 or self.default_max_tokens < 0 or self.max_output_estimate < 0:
            raise ValueError("token counts must be >= 0")

    def text_tokens(self, nchars: int) -> int:
        """Tokens for ``nchars`` characters of text (at least 1 for non-empty text)."""
        if nchars <= 0:
            return 0
        return max(1, math.ceil(nchars / self.chars_per_token))

    def image_tokens(self, size: tuple[int, int] | None) -> int:
        """Visual tokens for an image of ``(width, height)``; ``unknown_image_tokens`` when size is None."""
        if size is None:
            return self.unknown_image_tokens
        width, height = size
        if width <= 0 or height <= 0:
            return self.unknown_image_tokens
        return math.ceil(height / self.px_per_token) * math.ceil(width / self.px_per_token)

    def output_tokens(self, max_tokens: object) -> int:
        """Output tokens counted for a request's ``max_tokens`` value (any JSON value)."""
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0:
            return min(max_tokens, self.max_output_estimate)
        return min(self.default_max_tokens, self.max_output_estimate)
