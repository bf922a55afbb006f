"""`eccache` command line: serve, stats, put/get/lookup/delete, bench, proxy, demo.

Every `serve` flag has an environment variable (ECCACHE_<FLAG>, e.g. ECCACHE_POOL_SIZE); flags win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from eccache.server.config import ServerConfig, parse_size


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"ECCACHE_{name}", default)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text not in (None, "") else None


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=_env("SERVER", "127.0.0.1:50051"), help="host:port [ECCACHE_SERVER]")
    p.add_argument("--auth-token", default=_env("AUTH_TOKEN"), help="bearer token [ECCACHE_AUTH_TOKEN]")
    p.add_argument("--tls-ca", default=_env("TLS_CA"), help="CA certificate (PEM) [ECCACHE_TLS_CA]")


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run a cache server")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="gRPC/metrics bind address [ECCACHE_HOST]")
    p.add_argument("--port", type=int, default=int(_env("PORT", "50051") or 50051), help="gRPC port, 0 = any [ECCACHE_PORT]")
    p.add_argument("--pool-size", default=_env("POOL_SIZE", "1GiB"), help="pool bytes, e.g. 256MiB, 4GiB [ECCACHE_POOL_SIZE]")
    p.add_argument("--redis-url", default=_env("REDIS_URL"), help="Redis URL; absent = embedded store [ECCACHE_REDIS_URL]")
    p.add_argument("--transport", choices=["mooncake", "inline"], default=_env("TRANSPORT", "mooncake"),
                   help="data plane offered (mooncake also serves inline) [ECCACHE_TRANSPORT]")
    p.add_argument("--te-host", default=_env("TE_HOST", "127.0.0.1"),
                   help="address Mooncake peers reach this node at [ECCACHE_TE_HOST]")
    p.add_argument("--te-protocol", default=_env("TE_PROTOCOL", "tcp"), help="tcp or rdma [ECCACHE_TE_PROTOCOL]")
    p.add_argument("--metrics-port", type=int, default=_int_or_none(_env("METRICS_PORT")),
                   help="Prometheus /metrics port [ECCACHE_METRICS_PORT]")
    p.add_argument("--auth-token", default=_env("AUTH_TOKEN"), help="require this bearer token [ECCACHE_AUTH_TOKEN]")
    p.add_argument("--tls-cert", default=_env("TLS_CERT"), help="server certificate (PEM) [ECCACHE_TLS_CERT]")
    p.add_argument("--tls-key", default=_env("TLS_KEY"), help="server key (PEM) [ECCACHE_TLS_KEY]")
    p.add_argument("--advertise-address", default=_env("ADVERTISE_ADDRESS"),
                   help="host:port clients use to reach this server (default: host:port, or hostname:port "
                        "when bound to 0.0.0.0) [ECCACHE_ADVERTISE_ADDRESS]")
    p.add_argument("--node-name", default=_env("NODE_NAME"),
                   help="stable node name (default host:port); a restart under it retires the old pool [ECCACHE_NODE_NAME]")
    p.add_argument("--write-lease-ms", type=int, default=int(_env("WRITE_LEASE_MS", "30000") or 30000),
                   help="default write lease [ECCACHE_WRITE_LEASE_MS]")
    p.add_argument("--read-lease-ms", type=int, default=int(_env("READ_LEASE_MS", "30000") or 30000),
                   help="default read lease [ECCACHE_READ_LEASE_MS]")
    p.add_argument("--heartbeat-ms", type=int, default=int(_env("HEARTBEAT_MS", "1000") or 1000),
                   help="pool heartbeat and housekeeping period [ECCACHE_HEARTBEAT_MS]")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), help="[ECCACHE_LOG_LEVEL]")
    p.add_argument("--log-format", choices=["text", "json"], default=_env("LOG_FORMAT", "text"),
                   help="[ECCACHE_LOG_FORMAT]")


def _cmd_serve(args: argparse.Namespace) -> int:
    from eccache import logs
    from eccache.server.app import serve

    logs.setup(args.log_level, args.log_format)
    config = ServerConfig(
        host=args.host, port=args.port, pool_nbytes=parse_size(args.pool_size), redis_url=args.redis_url,
        transport=args.transport, te_host=args.te_host, te_protocol=args.te_protocol,
        auth_token=args.auth_token, tls_cert=args.tls_cert, tls_key=args.tls_key,
        metrics_port=args.metrics_port, node_name=args.node_name, advertise_address=args.advertise_address, write_lease_ms=args.write_lease_ms,
        read_lease_ms=args.read_lease_ms, heartbeat_ms=args.heartbeat_ms)
    serve(config)
    return 0


def _client(args: argparse.Namespace):  # noqa: ANN202
    from eccache.client import Client

    return Client(args.server, auth_token=args.auth_token, tls_ca=args.tls_ca)


def _cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.stats(), indent=2))
    return 0


def _cmd_lookup(args: argparse.Namespace) -> int:
    with _client(args) as client:
        entries = client.lookup_entries(args.namespace, args.identifiers)
        print(json.dumps({i: (None if e is None else {"shape": list(e.shape), "dtype": e.dtype, "nbytes": e.nbytes,
                                                      "hits": e.hits})
                          for i, e in zip(args.identifiers, entries)}, indent=2))
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps({"deleted": client.delete(args.namespace, args.identifiers)}))
    return 0


def _delegate(module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return int(importlib.import_module(module).main(argv) or 0)
    return run


# subcommands implemented by other packages; they parse their own flags
_DELEGATED = {"proxy": "proxy.cli", "demo": "eccache.demo", "chaos": "eccache.chaos.soak"}
_BENCHES = {"transfer": "eccache.bench.transfer", "lookup": "eccache.bench.lookup", "proxy": "proxy.bench",
            "connector": "connector.bench", "e2e": "eccache.bench.e2e"}


def build_parser() -> argparse.ArgumentParser:
    """The parser of the commands eccache parses itself (serve, stats, lookup, delete)."""
    parser = argparse.ArgumentParser(prog="eccache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    for name, fn, help_text in (("stats", _cmd_stats, "print a server's stats as JSON"),
                                ("lookup", _cmd_lookup, "look identifiers up"),
                                ("delete", _cmd_delete, "delete entries")):
        p = sub.add_parser(name, help=help_text)
        _add_client_flags(p)
        if name != "stats":
            p.add_argument("namespace")
            p.add_argument("identifiers", nargs="+")
        p.set_defaults(fn=fn)
    sub.add_parser("proxy", help="run the EPD proxy (eccache proxy --help)")
    sub.add_parser("demo", help="run a local EPD demo (eccache demo --help)")
    sub.add_parser("chaos", help="soak + fault injection report (eccache chaos --help)")
    bench = sub.add_parser("bench", help="benchmarks: " + ", ".join(_BENCHES))
    bench.add_argument("suite", choices=sorted(_BENCHES))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _delegate(_DELEGATED[argv[0]])(argv[1:])
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in _BENCHES:
        return _delegate(_BENCHES[argv[1]])(argv[2:])
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _cmd_serve(args)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
