"""Placeholder metadata stored with an entry (pure): what a proxy needs to send PD a metadata-only
`image_embeds` part instead of the media, e.g. `{"image_grid_thw": [1, 4, 4]}`.

One encoding for every writer (the connector, mock encoders) and reader (the proxy): a msgpack map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack


def pack_placeholders(metadata: Mapping[str, Any]) -> bytes:
    """The bytes stored with an entry; empty for no metadata."""
    return msgpack.packb(dict(metadata), use_bin_type=True) if metadata else b""


def unpack_placeholders(raw: bytes | None) -> dict[str, Any] | None:
    """The metadata map, or None when absent or not a non-empty msgpack map (treated as unknown)."""
    if not raw:
        return None
    try:
        value = msgpack.unpackb(raw, raw=False)
    except Exception:  # noqa: BLE001 - undecodable metadata is simply unknown
        return None
    return value if isinstance(value, dict) and value else None
