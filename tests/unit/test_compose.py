"""docker-compose.yml, Dockerfile and deploy/prometheus.yml are consistent with the real CLIs (no docker needed).

Every `eccache serve`, `eccache proxy` and `python -m proxy.mock_vllm` command must be accepted by the parser
that will run it; dependencies, profiles, ports, healthchecks, proxy back-ends and Prometheus targets must
agree with what the services listen on; Mooncake TE ports are never published.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")

# Well-known listening ports of third-party images (no --port in their command)
_DEFAULT_PORTS = {"redis": 6379, "prom/prometheus": 9090}


# ---- loading ---------------------------------------------------------------------------------------------
def _interpolate(text: str) -> str:
    """Compose variable substitution with an empty environment: ${X:-default} -> default, ${X} -> ''."""
    return _VAR.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", text.replace("$$", "\0")) \
        .replace("\0", "$")


def _resolve(node: Any) -> Any:
    if isinstance(node, str):
        return _interpolate(node)
    if isinstance(node, list):
        return [_resolve(v) for v in node]
    if isinstance(node, dict):
        return {k: _resolve(v) for k, v in node.items()}
    return node


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # safe_load resolves `<<: *anchor` merges like compose does
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return _resolve(data)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _command(svc: dict[str, Any]) -> list[str]:
    """entrypoint + command (the image entrypoints are unset for our images)."""
    return _argv(svc.get("entrypoint")) + _argv(svc.get("command"))


def _kind(argv: list[str]) -> str | None:
    if argv[:2] == ["eccache", "serve"]:
        return "serve"
    if argv[:2] == ["eccache", "proxy"]:
        return "proxy"
    if argv[:3] == ["python", "-m", "proxy.mock_vllm"]:
        return "mock"
    if argv[:2] == ["vllm", "serve"]:
        return "vllm"
    return None


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _flag_values(argv: list[str], name: str) -> list[str]:
    """Values of a repeatable nargs='+' flag (`--encode U1 U2 --encode U3`)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == name:
            for value in argv[i + 1:]:
                if value.startswith("--"):
                    break
                out.append(value)
    return out


def _profiles(svc: dict[str, Any]) -> set[str]:
    return set(svc.get("profiles") or [])


def _names(name: str, svc: dict[str, Any]) -> set[str]:
    """Network names of a service: its name, hostname and aliases."""
    names = {name}
    if svc.get("hostname"):
        names.add(svc["hostname"])
    networks = svc.get("networks") or {}
    if isinstance(networks, dict):
        for net in networks.values():
            names.update((net or {}).get("aliases") or [])
    return names


def _listen_ports(name: str, svc: dict[str, Any]) -> set[int]:
    argv = _command(svc)
    ports: set[int] = set()
    for flag in ("--port", "--metrics-port"):
        value = _flag(argv, flag)
        if value is not None:
            ports.add(int(value))
    for arg in argv:  # --web.listen-address=:9090 and the like
        m = re.match(r"--[\w.-]*listen-address=.*:(\d+)$", arg)
        if m:
            ports.add(int(m.group(1)))
    if not ports:
        image = str(svc.get("image", "")).split(":")[0]
        if image in _DEFAULT_PORTS:
            ports.add(_DEFAULT_PORTS[image])
    return ports


def _published(svc: dict[str, Any]) -> Iterator[tuple[str, int | None, int]]:
    """(host ip, host port, container port) of each published port."""
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            yield str(entry.get("host_ip", "")), (int(entry["published"]) if entry.get("published") else None), \
                int(entry["target"])
            continue
        spec = str(entry).split("/")[0]
        parts = spec.rsplit(":", 2) if spec.count(":") >= 2 else spec.split(":")
        if len(parts) == 3:
            yield parts[0], int(parts[1]), int(parts[2])
        elif len(parts) == 2:
            yield "", int(parts[0]), int(parts[1])
        else:
            yield "", None, int(parts[0])


def _healthcheck_text(svc: dict[str, Any]) -> str:
    test = (svc.get("healthcheck") or {}).get("test")
    return " ".join(_argv(test)) if test is not None else ""


def _coexist(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two services can run together: either has no profile, or they share one."""
    pa, pb = _profiles(a), _profiles(b)
    return not pa or not pb or bool(pa & pb)


# ---- the real parsers ------------------------------------------------------------------------------------
def _parse_serve(argv: list[str]) -> argparse.Namespace:
    from eccache import cli

    return _strict_parse(cli.build_parser(), ["serve", *argv])


def _parse_proxy(argv: list[str]) -> argparse.Namespace:
    from proxy import cli

    return _strict_parse(cli.build_parser(), argv)


def _parse_mock(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs mock_vllm.main() with asyncio.run stubbed out: full flag parsing, nothing served."""
    from proxy import mock_vllm

    monkeypatch.setattr(mock_vllm.asyncio, "run", lambda coro: coro.close())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            assert mock_vllm.main(argv) == 0
        except SystemExit as exc:
            raise AssertionError(f"mock_vllm rejects {argv}: {err.getvalue().strip()}") from exc


def _strict_parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return parser.parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"{parser.prog} rejects {argv}: {err.getvalue().strip()}") from exc


def _check_against_help(help_cmd: list[str], argv: list[str]) -> argparse.Namespace:  # pragma: no cover
    text = subprocess.run(help_cmd, capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    for arg in argv:
        if arg.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(arg.split('=')[0])}(?![\w-])", text), f"unknown flag {arg}"
    return argparse.Namespace()


def _by_kind(services: dict[str, dict[str, Any]], kind: str) -> dict[str, list[str]]:
    return {n: _command(s) for n, s in services.items() if _kind(_command(s)) == kind}


# ---- structure -------------------------------------------------------------------------------------------
def test_required_services_and_profiles(services: dict[str, dict[str, Any]]) -> None:
    for name in ("redis", "eccache", "proxy", "prometheus"):
        assert name in services, name
    for name in ("redis", "eccache", "proxy"):
        assert not _profiles(services[name]), f"{name} must run in every profile"
    profiles = set().union(*(_profiles(s) for s in services.values()))
    assert {"demo", "gpu"} <= profiles
    demo = {n for n, s in services.items() if "demo" in _profiles(s)}
    assert {_kind(_command(services[n])) for n in demo} == {"mock"}, "demo must run on CPU only"
    for name, svc in services.items():
        if "gpu" in _profiles(svc):
            devices = svc["deploy"]["resources"]["reservations"]["devices"]
            assert any("gpu" in d.get("capabilities", []) for d in devices), name


def test_restart_policies_and_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), name
        assert _healthcheck_text(svc), f"{name} has no healthcheck"


def test_eccache_replicas_share_redis_with_distinct_identities(services: dict[str, dict[str, Any]]) -> None:
    servers = _by_kind(services, "serve")
    assert "eccache" in servers
    replicas = sum(int((services[n].get("deploy") or {}).get("replicas", 1)) for n in servers)
    assert replicas >= 2, "two eccache replicas sharing Redis"
    redis_urls = {_flag(argv, "--redis-url") for argv in servers.values()}
    assert len(redis_urls) == 1 and None not in redis_urls, redis_urls
    host = urlsplit(redis_urls.pop()).hostname
    assert host in _names("redis", services["redis"])
    if len(servers) > 1:
        node_names = [_flag(argv, "--node-name") for argv in servers.values()]
        assert None not in node_names and len(set(node_names)) == len(node_names), node_names
    for name, argv in servers.items():
        assert _flag(argv, "--host") == "0.0.0.0", name
        # Mooncake peers must reach the node at --te-host: the service's own network name
        if _flag(argv, "--transport") != "inline":
            assert _flag(argv, "--te-host") in _names(name, services[name]), name
        assert _flag(argv, "--metrics-port") is not None, name


# ---- flags accepted by the real CLIs ---------------------------------------------------------------------
def test_serve_commands_parse(services: dict[str, dict[str, Any]]) -> None:
    servers = _by_kind(services, "serve")
    assert servers
    for argv in servers.values():
        args = _parse_serve(argv[2:])
        assert args.command == "serve"


def test_proxy_commands_parse(services: dict[str, dict[str, Any]]) -> None:
    proxies = _by_kind(services, "proxy")
    assert "proxy" in proxies
    for argv in proxies.values():
        args = _parse_proxy(argv[2:])
        assert args.host == "0.0.0.0"
        assert args.encode and (args.pd or (args.prefill and args.decode))


def test_mock_commands_parse(services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    mocks = _by_kind(services, "mock")
    assert {_flag(a, "--role") for a in mocks.values()} >= {"encode", "pd"}
    for argv in mocks.values():
        _parse_mock(argv[3:], monkeypatch)
        assert _flag(argv, "--host") == "0.0.0.0"


def test_dockerfile_default_command_parses() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    for pkg in ("libibverbs1", "libnuma1", "libcurl4"):
        assert pkg in text
    assert "[mooncake]" in text or ("ARG EXTRAS=mooncake" in text and "[$EXTRAS]" in text)
    assert re.search(r"^EXPOSE\s+.*\b50051\b", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as non-root"
    cmd = json.loads(re.findall(r"^CMD\s+(\[.*\])\s*$", text, re.M)[-1])
    assert cmd[:2] == ["eccache", "serve"]
    _parse_serve(cmd[2:])
    assert _flag(cmd, "--port") == "50051"


def test_connector_config(services: dict[str, dict[str, Any]]) -> None:
    serve_addrs = {f"{n}:{_flag(a, '--port')}" for n, a in _by_kind(services, "serve").items()}
    roles = set()
    for name, argv in _by_kind(services, "vllm").items():
        config = json.loads(_flag(argv, "--ec-transfer-config"))
        assert config["ec_connector"] == "ECCacheConnector"
        assert config["ec_connector_module_path"] == "connector.eccache_connector"
        roles.add(config["ec_role"])
        servers = config["ec_connector_extra_config"]["server"]
        from connector.config import ConnectorConfig

        parsed = ConnectorConfig.from_extra_config(config["ec_connector_extra_config"], env={})
        assert set(parsed.servers) <= serve_addrs, (name, servers)
        assert _flag(argv, "--mm-processor-cache-gb") is None, "keep identifiers content hashes"
    assert roles == {"ec_producer", "ec_consumer"}


# ---- dependencies and ports ------------------------------------------------------------------------------
def test_depends_on_targets_exist_and_are_healthy(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        items = {d: {} for d in deps} if isinstance(deps, list) else deps
        for target, spec in items.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            assert _coexist(svc, services[target]), f"{name} depends on {target} from another profile"
            if (spec or {}).get("condition") == "service_healthy":
                assert _healthcheck_text(services[target]), f"{target} has no healthcheck"


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    seen: list[tuple[str, int, str]] = []  # (host ip, host port, service)
    for name, svc in services.items():
        listening = _listen_ports(name, svc)
        for host_ip, host_port, target in _published(svc):
            assert target in listening, f"{name} publishes {target} but listens on {sorted(listening)}"
            if host_port is None:
                continue
            for ip, port, other in seen:
                same_ip = ip == host_ip or ip in ("", "0.0.0.0") or host_ip in ("", "0.0.0.0")
                assert not (port == host_port and same_ip and _coexist(svc, services[other])), \
                    f"host port {host_port} published by {other} and {name}"
            seen.append((host_ip, host_port, name))
        if _kind(_command(svc)) == "serve":
            # only the gRPC port may leave the internal network (never Mooncake TE ports)
            assert {t for _, _, t in _published(svc)} <= {int(_flag(_command(svc), "--port"))}, name
        if name == "redis":
            assert not svc.get("ports"), "redis stays internal"


def test_healthchecks_probe_the_listening_port(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        text = _healthcheck_text(svc)
        ports = {int(p) for p in re.findall(r"(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)", text)}
        if "redis-cli" in text:
            ports |= {int(_flag(_argv(svc["healthcheck"]["test"]), "-p") or 6379)}
        assert ports, f"{name}: healthcheck names no port"
        assert ports <= _listen_ports(name, svc), f"{name}: healthcheck {ports} vs {_listen_ports(name, svc)}"
        if _kind(_command(svc)) == "serve":
            assert "grpc_health" in text, "eccache is probed through the gRPC health service"


def _targets(services: dict[str, dict[str, Any]], host: str) -> list[tuple[str, dict[str, Any]]]:
    return [(n, s) for n, s in services.items() if host in _names(n, s)]


def test_proxy_backends_and_eccache_resolve(services: dict[str, dict[str, Any]]) -> None:
    for name, argv in _by_kind(services, "proxy").items():
        for flag in ("--encode", "--pd", "--prefill", "--decode"):
            for url in _flag_values(argv, flag):
                parts = urlsplit(url)
                targets = _targets(services, parts.hostname)
                assert targets, f"{name} {flag} {url}: no such service"
                for profile in ("demo", "gpu"):
                    hits = [(n, s) for n, s in targets if profile in _profiles(s)]
                    assert hits, f"{url} has no instance in profile {profile}"
                    for n, s in hits:
                        assert parts.port in _listen_ports(n, s), f"{url} vs {n} {_listen_ports(n, s)}"
    clients = {**_by_kind(services, "proxy"), **_by_kind(services, "mock")}
    for name, argv in clients.items():
        address = _flag(argv, "--eccache")
        assert address, f"{name} has no --eccache"
        host, port = address.rsplit(":", 1)
        targets = [(n, s) for n, s in _targets(services, host) if _kind(_command(s)) == "serve"]
        assert targets and all(_flag(_command(s), "--port") == port for _, s in targets), (name, address)
        deps = services[name].get("depends_on") or {}
        assert any(n in deps for n, _ in targets), f"{name} must depend on {host}"


def test_prometheus_scrapes_metrics_ports(services: dict[str, dict[str, Any]]) -> None:
    prom = services["prometheus"]
    mounts = [str(v).split(":") for v in prom.get("volumes") or []]
    assert any(Path(ROOT, src).resolve() == PROMETHEUS.resolve() for src, *_ in mounts)
    config = yaml.safe_load(PROMETHEUS.read_text())
    scraped: set[str] = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host in ("localhost", "127.0.0.1"):
                    assert int(port) in _listen_ports("prometheus", prom)
                    continue
                hits = _targets(services, host)
                assert hits, f"scrape target {target}: no such service"
                for n, s in hits:
                    argv = _command(s)
                    expected = _flag(argv, "--metrics-port") if _kind(argv) == "serve" else _flag(argv, "--port")
                    assert port == expected, f"scrape target {target} vs {n} metrics on {expected}"
                    scraped.add(n)
    assert set(_by_kind(services, "serve")) | set(_by_kind(services, "proxy")) <= scraped
