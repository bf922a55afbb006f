"""Media URL parsing and policy (pure): data: URLs, file:// under an allowed directory, http(s) checks.

Downloads of http(s) URLs live in ``proxy.fetch`` (aiohttp); this module decides *whether* and *how* a URL
may be read and decodes what needs no network. Every refusal is a ``MediaError`` (HTTP 400) or
``PayloadTooLarge`` (413).
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

from proxy.errors import MediaError, PayloadTooLarge


class UrlKind(enum.Enum):
    DATA = "data"
    HTTP = "http"
    FILE = "file"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaPolicy:
    """Limits on reading media.

    Args:
        max_nbytes: largest decoded media item.
        fetch_timeout_s: whole-download limit for one http(s) item.
        allowed_file_dir: file:// URLs must resolve under this directory; None forbids file:// entirely.
        deny_private_networks: refuse http(s) hosts that resolve to loopback/private/link-local addresses.
        allow_http: whether http(s) URLs may be fetched at all.
    """

    max_nbytes: int = 20 * 1024 * 1024
    fetch_timeout_s: float = 10.0
    allowed_file_dir: str | None = None
    deny_private_networks: bool = False
    allow_http: bool = True

    def __post_init__(self) -> None:
        if self.max_nbytes <= 0:
            raise ValueError("max_nbytes must be > 0")
        if self.fetch_timeout_s <= 0:
            raise ValueError("fetch_timeout_s must be > 0")


def classify_url(url: str) -> UrlKind:
    """Which reader handles ``url``; raises MediaError for other schemes."""
    if not isinstance(url, str) or not url:
        raise MediaError("media url must be a non-empty string")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return UrlKind.DATA
    if scheme in ("http", "https"):
        return UrlKind.HTTP
    if scheme == "file":
        return UrlKind.FILE
    raise MediaError(f"unsupported media url scheme {scheme!r}")


def decode_data_url(url: str, max_nbytes: int) -> tuple[str, bytes]:
    """Decode ``data:[<mime>][;base64],<payload>`` into ``(mime, bytes)``.

    Raises:
        MediaError: malformed URL or payload.
        PayloadTooLarge: decoded size would exceed ``max_nbytes``.
    """
    head, sep, payload = url.partition(",")
    if not sep or not head.lower().startswith("data:"):
        raise MediaError("malformed data: url")
    params = head[5:].split(";")
    mime = params[0] or "text/plain"
    is_b64 = any(p.strip().lower() == "base64" for p in params[1:])
    if is_b64:
        if len(payload) // 4 * 3 > max_nbytes + 3:
            raise PayloadTooLarge(f"media item larger than {max_nbytes} bytes")
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"invalid base64 in data: url: {exc}") from exc
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_nbytes:
        raise PayloadTooLarge(f"media item larger than {max_nbytes} bytes")
    if not data:
        raise MediaError("empty data: url")
    return mime, data


def encode_data_url(data: bytes, mime: str = "application/octet-stream") -> str:
    """A base64 data: URL for ``data``."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def resolve_file_url(url: str, allowed_dir: str | None) -> Path:
    """The real path of a file:// URL, which must lie under ``allowed_dir`` (symlinks resolved).

    Raises:
        MediaError: file:// disabled, a remote host, or a path outside the allowed directory.
    """
    if allowed_dir is None:
        raise MediaError("file:// media urls are disabled")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise MediaError("file:// urls with a host are not allowed")
    raw = unquote_to_bytes(parts.path).decode("utf-8", errors="strict")
    if "\x00" in raw:
        raise MediaError("invalid file path")
    root = Path(os.path.realpath(allowed_dir))
    path = Path(os.path.realpath(raw))
    if path != root and root not in path.parents:
        raise MediaError("file:// path outside the allowed directory")
    return path


def check_http_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL; raises MediaError when it has no host."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise MediaError("http(s) media url without a host")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise MediaError(f"invalid port in media url: {exc}") from exc
    return parts.hostname, port


def is_denied_address(address: str) -> bool:
    """True for loopback, private, link-local, multicast, reserved or unspecified IP addresses."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)
