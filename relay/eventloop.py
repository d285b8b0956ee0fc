"""The event loop every process of the relay runs on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed (measured cheaper per message for the
    fronts, the queue runner and the inspection workers), on the standard loop otherwise;
    RELAY_EVENT_LOOP=asyncio chooses the standard one."""
    if os.environ.get("RELAY_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(main)
