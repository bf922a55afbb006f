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
from proxy.imagesize import image_format, image_size


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
        max_image_pixels: largest width x height an image header may claim (a decompression bomb guard;
            the default is PIL's own warning threshold).
        allow_unknown_formats: pass media whose magic bytes are not PNG/JPEG/GIF/WebP to the encoder
            unchecked (else 400).
    """

    max_nbytes: int = 20 * 1024 * 1024
    fetch_timeout_s: float = 10.0
    allowed_file_dir: str | None = None
    deny_private_networks: bool = False
    allow_http: bool = True
    max_image_pixels: int = 89_478_485
    allow_unknown_formats: bool = False

    def __post_init__(self) -> None:
        if self.max_image_pixels <= 0:
            raise ValueError("max_image_pixels must be > 0")
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
    """True for any address that is not globally routable: loopback, private, link-local, shared (CGNAT,
    100.64/10, where some clouds put metadata services), multicast, reserved, unspecified; IPv6 forms that
    embed an IPv4 address (mapped, 6to4, NAT64 64:ff9b::/96) are judged by that address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return bool(ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def check_image(data: bytes, mime: str | None, policy: MediaPolicy) -> tuple[int, int] | None:
    """Refuse media that cannot be a sane image before any encoder sees it; returns ``(width, height)``.

    Args:
        data: the decoded bytes. mime: the type a data: URL declared (None for http/file media, whose
            server-sent types are unreliable).

    Raises:
        MediaError: a data: URL declaring a non-image type, a known format with a truncated or corrupt
            header, or (unless ``allow_unknown_formats``) an unrecognised format.
        PayloadTooLarge: the header claims more than ``max_image_pixels`` pixels.
    """
    if mime is not None:
        base = mime.split(";", 1)[0].strip().lower()
        if not base.startswith("image/") and base != "application/octet-stream":
            raise MediaError(f"image_url data: url has non-image type {base[:64]!r}")
    fmt = image_format(data)
    if fmt is None:
        if policy.allow_unknown_formats:
            return None
        raise MediaError("unrecognised image format (expected PNG, JPEG, GIF or WebP)")
    size = image_size(data)
    if size is None:
        raise MediaError(f"truncated or corrupt {fmt.upper()} header")
    width, height = size
    if width * height > policy.max_image_pixels:
        raise PayloadTooLarge(f"image of {width}x{height} pixels exceeds the limit of {policy.max_image_pixels}")
    return size
