"""Start and stop a proxy inside a running event loop (used by the CLI, the bench and tests)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy.app import CORE, build_app
from proxy.cache import CacheView
from proxy.config import ProxyConfig
from proxy.identity import TenantDirectory
from proxy.pipeline import ProxyCore


@dataclass(eq=False)
class RunningProxy:
    runner: web.AppRunner
    host: str
    port: int
    core: ProxyCore

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_proxy(config: ProxyConfig, *, cache: CacheView | None = None,
                      tenants: TenantDirectory | None = None, probes: bool = True) -> RunningProxy:
    """Build, bind and start the proxy; port 0 picks a free port (then the metaserver URL uses it)."""
    app = build_app(config, cache=cache, tenants=tenants, probes=probes)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    server = site._server
    port = config.port
    if server is not None and getattr(server, "sockets", None):
        port = server.sockets[0].getsockname()[1]
    core = app[CORE]
    if config.public_url is None:
        core.metaserver_url = f"http://{config.host}:{port}/v1/metaserver"
    return RunningProxy(runner, config.host, port, core)
