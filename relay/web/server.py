"""`relay web`: serve the console with uvicorn under systemd.

READY=1 once the socket listens, a watchdog ping from the event loop, SIGHUP reloads
the configuration (session times, lockout, language; a new bind or certificate needs
a restart, and says so), SIGTERM stops after open requests finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import uvicorn

from relay.config import EX_CONFIG, Config, ConfigError, load
from relay.daemon import sd_notify, setup_logging, watchdog
from relay.web.app import build, open_console
from relay.web.frame import Console

log = logging.getLogger("relay.web")


def uvicorn_config(config: Config, console: Console) -> uvicorn.Config:
    web = config.web
    tls = {}
    if web.tls_cert:
        tls = {"ssl_certfile": str(config.state_file(web.tls_cert)),
               "ssl_keyfile": str(config.state_file(web.tls_key)) if web.tls_key else None}
    return uvicorn.Config(
        build(console), host=web.bind[0], port=web.bind[1], log_config=None,
        access_log=False, server_header=False, proxy_headers=bool(web.trusted_proxies),
        forwarded_allow_ips=list(web.trusted_proxies) or None, lifespan="off",
        limit_concurrency=200, timeout_keep_alive=5, timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=16 * 1024, **tls)


async def serve(config: Config, config_path: Path | None) -> int:
    console = await asyncio.to_thread(open_console, config)
    server = uvicorn.Server(uvicorn_config(config, console))

    def reload() -> None:
        sd_notify("RELOADING=1\nMONOTONIC_USEC="
                  f"{int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)}")
        try:
            new = load(config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
        else:
            if (new.web.bind, new.web.tls_cert, new.web.tls_key) != \
                    (console.config.web.bind, console.config.web.tls_cert,
                     console.config.web.tls_key):
                log.warning("web.bind and web.tls_* change only with a restart")
            console.reload(new)
            log.info("configuration reloaded from %s", config_path or "embedded defaults")
        sd_notify("READY=1")

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if serving.done():  # could not bind
        await serving
        console.archive.close()
        return 1
    log.info("web console on %s://%s:%d", "https" if config.web.tls_cert else "http",
             *config.web.bind)
    sd_notify("READY=1")
    pinger = asyncio.create_task(watchdog())
    try:
        await serving
    finally:
        sd_notify("STOPPING=1")
        pinger.cancel()
        console.archive.close()
    return 0


def run(config: Config, config_path: Path | None) -> int:
    setup_logging(config.server.log_level)
    try:
        return asyncio.run(serve(config, config_path))
    except ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
