"""The stores and clients policies use, built once from the configuration.

The engine hands this dict to every policy through `Context.services`; a
policy asks for a service by name and gets an error if it is not configured.
"""

from __future__ import annotations

from typing import Any

from relay.archive import Archive
from relay.config import Config
from relay.directory.store import DirectoryStore


async def build(config: Config, archive: bool = True) -> dict[str, Any]:
    """`archive=False` for dry runs (test-message) that must leave no trace."""
    services: dict[str, Any] = {}
    # opens (and migrates) the database on first use, so a relay without directory
    # policies never creates one
    services["directory"] = DirectoryStore(config)
    if archive and config.archive.enabled:
        # looks up services["directory"] per message, so the order here does not matter
        services["archive"] = Archive.open(config, services)
    return services


async def close(services: dict[str, Any]) -> None:
    for service in services.values():
        closer = getattr(service, "aclose", None) or getattr(service, "close", None)
        if closer is not None:
            result = closer()
            if hasattr(result, "__await__"):
                await result
