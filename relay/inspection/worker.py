"""An inspection worker: a process that runs the DATA stage, one message at a time.

Started by `WorkerPool` through multiprocessing's fork server (this module and the
policies are imported there once, so a new worker is a fork, not a fresh
interpreter). It builds its own engine from the configuration it is given, limits
its own memory, says it is ready, then answers one request after another on its
socket until the socket closes. The front kills it when a message runs over the
wall-time budget; a memory error or a message that is too complex is answered
as such, after which the worker exits to be replaced by a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
from pathlib import Path
from typing import Any

from relay.body import Body
from relay.config import from_dict
from relay.engine import Engine
from relay.inspection.inline import inspect_here
from relay.inspection.wire import frame, recv_frame, transaction, verdict_header
from relay.policyset import configure
from relay.services import Services

log = logging.getLogger("relay.inspection")

# where a message stops being small: past it the worker is replaced after answering,
# so that one large message does not leave a large process behind
RECYCLE_AFTER_BYTES = 8 * 1024 * 1024


def main(sock: socket.socket, raw_config: dict[str, Any], source: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    config = from_dict(raw_config, Path(source) if source else None)
    limit = config.inspection.max_memory
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    asyncio.run(_serve(sock, config))


async def _serve(sock: socket.socket, config: Any) -> None:
    services = Services.build(config, archive=False)
    engine = Engine(config, configure(config), services)
    loop = asyncio.get_running_loop()
    max_payload = config.server.max_message_size + 1024 * 1024
    sock.setblocking(True)
    sock.sendmsg(frame({"ready": os.getpid()}))
    try:
        while True:
            try:
                header, payload = await loop.run_in_executor(None, recv_frame, sock,
                                                              max_payload)
            except EOFError:
                return
            tx = transaction(header["tx"])
            known = len(tx.decisions)
            # a large message was spooled to a file by the front: read it here
            body = Body.at(Path(header["path"])) if "path" in header else Body.of(payload)
            del payload
            verdict = await inspect_here(engine, tx, body)
            answer = verdict_header(tx, verdict, known)
            recycle = body.size > RECYCLE_AFTER_BYTES or any(
                d.finding.code in ("inspection.memory", "inspection.too_complex")
                for d in tx.decisions[known:])
            answer["recycle"] = recycle
            out = verdict.prefix + (verdict.replaced or b"")
            sock.sendall(b"".join(frame(answer, out)))
            if recycle:
                return
    finally:
        await engine.close()
        await services.aclose()

