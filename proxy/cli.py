"""``eccache proxy ...`` / ``python -m proxy``: parse flags into a ProxyConfig and serve until stopped.

``main(argv)`` returns the exit code; it prints ``eccache proxy listening on H:P`` once the port is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from proxy.balancer import HealthPolicy
from proxy.config import ProxyConfig, Timeouts
from proxy.media import MediaPolicy
from proxy.routing import Convention
from proxy.server import start_proxy
from proxy.tokens import PX_PER_TOKEN_BY_FAMILY, TokenEstimator


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eccache proxy", description="EC-aware OpenAI-compatible EPD proxy")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--encode", nargs="+", action="extend", default=[], metavar="URL", help="encoder instances")
    p.add_argument("--pd", nargs="+", action="extend", default=[], metavar="URL", help="prefill-decode instances")
    p.add_argument("--prefill", nargs="+", action="extend", default=[], metavar="URL")
    p.add_argument("--decode", nargs="+", action="extend", default=[], metavar="URL")
    p.add_argument("--pd-convention", choices=[c.value for c in Convention], default="vllm",
                   help="E->P->D convention: vllm (P first) or layerwise (D first, metaserver)")
    p.add_argument("--eccache", default=None, metavar="HOST:PORT", help="eccache server (omit: all-miss)")
    p.add_argument("--eccache-token", default=os.environ.get("ECCACHE_AUTH_TOKEN"),
                   help="bearer token of the eccache servers [ECCACHE_AUTH_TOKEN, as for eccache serve]")
    p.add_argument("--namespace", default=None, help="fixed eccache namespace (default: resolve model alias)")
    p.add_argument("--tenant-keys", default=None, metavar="FILE", help="JSON {api_key: {tenant, secret?}}")
    p.add_argument("--tenant-header", default=None, help="trusted header naming the tenant")
    p.add_argument("--uuid-secret", default=os.environ.get("ECCACHE_PROXY_UUID_SECRET",
                                                           "eccache-proxy-default-secret"))
    p.add_argument("--admin-key", default=os.environ.get("ECCACHE_PROXY_ADMIN_KEY"))
    p.add_argument("--public-url", default=None, help="URL at which D instances reach this proxy")
    p.add_argument("--model-family", choices=sorted(PX_PER_TOKEN_BY_FAMILY), default=None)
    p.add_argument("--px-per-token", type=int, default=28)
    p.add_argument("--chars-per-token", type=float, default=4.0)
    p.add_argument("--max-media-bytes", type=int, default=20 * 1024 * 1024)
    p.add_argument("--max-request-bytes", type=int, default=64 * 1024 * 1024)
    p.add_argument("--max-media-items", type=int, default=32)
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="client requests/streams in flight at once; more get 503 (0: unlimited)")
    p.add_argument("--max-image-pixels", type=int, default=89_478_485,
                   help="largest width*height an image header may claim (413 above)")
    p.add_argument("--allow-unknown-image-formats", action="store_true",
                   help="pass media that is not PNG/JPEG/GIF/WebP to the encoder unchecked")
    p.add_argument("--media-fetch-timeout", type=float, default=10.0)
    p.add_argument("--allowed-file-dir", default=None, help="file:// media allowed under this directory")
    p.add_argument("--deny-private-networks", action="store_true", help="refuse internal media hosts")
    p.add_argument("--no-http-media", action="store_true", help="refuse http(s) media urls")
    p.add_argument("--connect-timeout", type=float, default=3.0)
    p.add_argument("--encode-timeout", type=float, default=60.0)
    p.add_argument("--prefill-timeout", type=float, default=120.0)
    p.add_argument("--first-byte-timeout", type=float, default=120.0)
    p.add_argument("--idle-timeout", type=float, default=120.0)
    p.add_argument("--lookup-timeout", type=float, default=0.5)
    p.add_argument("--publish-wait", type=float, default=2.0,
                   help="seconds to wait for an encoder's entries to be READY before PD loads them")
    p.add_argument("--probe-interval", type=float, default=2.0)
    p.add_argument("--probe-timeout", type=float, default=2.0)
    p.add_argument("--eject-after", type=int, default=3)
    p.add_argument("--readmit-after", type=int, default=1)
    p.add_argument("--max-attempts", type=int, default=2)
    p.add_argument("--log-level", default="WARNING")
    return p


def config_from_args(args: argparse.Namespace) -> ProxyConfig:
    px = PX_PER_TOKEN_BY_FAMILY[args.model_family] if args.model_family else args.px_per_token
    return ProxyConfig(
        host=args.host, port=args.port,
        encode_urls=tuple(args.encode), pd_urls=tuple(args.pd),
        prefill_urls=tuple(args.prefill), decode_urls=tuple(args.decode),
        convention=Convention(args.pd_convention),
        eccache_address=args.eccache, eccache_token=args.eccache_token, namespace=args.namespace,
        tenant_keys_file=args.tenant_keys, tenant_header=args.tenant_header, uuid_secret=args.uuid_secret,
        admin_key=args.admin_key, public_url=args.public_url,
        estimator=TokenEstimator(chars_per_token=args.chars_per_token, px_per_token=px),
        media=MediaPolicy(max_nbytes=args.max_media_bytes, fetch_timeout_s=args.media_fetch_timeout,
                          allowed_file_dir=args.allowed_file_dir,
                          deny_private_networks=args.deny_private_networks, allow_http=not args.no_http_media,
                          max_image_pixels=args.max_image_pixels,
                          allow_unknown_formats=args.allow_unknown_image_formats),
        timeouts=Timeouts(connect_s=args.connect_timeout, encode_s=args.encode_timeout,
                          prefill_s=args.prefill_timeout, first_byte_s=args.first_byte_timeout,
                          idle_s=args.idle_timeout, probe_s=args.probe_timeout, lookup_s=args.lookup_timeout,
                          publish_s=args.publish_wait),
        health=HealthPolicy(eject_after=args.eject_after, readmit_after=args.readmit_after),
        probe_interval_s=args.probe_interval, max_request_nbytes=args.max_request_bytes,
        max_media_items=args.max_media_items, max_concurrent=args.max_concurrent, max_attempts=args.max_attempts,
    )


async def _serve(config: ProxyConfig) -> None:
    running = await start_proxy(config)
    print(f"eccache proxy listening on {running.host}:{running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the proxy; returns 0 on a clean stop, 2 on bad flags/config."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"eccache proxy: {exc}", file=sys.stderr)
        return 2
    if config.tenant_keys_file is not None:
        from proxy.identity import load_tenant_directory

        try:
            load_tenant_directory(config.tenant_keys_file, uuid_secret=config.uuid_secret,
                                  tenant_header=config.tenant_header)
        except (ValueError, OSError) as exc:
            print(f"eccache proxy: bad --tenant-keys: {exc}", file=sys.stderr)
            return 2
    run = asyncio.run
    if os.environ.get("ECCACHE_PROXY_UVLOOP", "1") != "0":
        try:
            import uvloop  # optional: a faster event loop when installed

            run = uvloop.run
        except (ImportError, AttributeError):
            pass
    with contextlib.suppress(KeyboardInterrupt):
        run(_serve(config))
    return 0
