"""The stores policies and fronts use, built once per configuration load.

The engine hands them to every policy through `Context.services`; the fronts use
the directory for AUTH and the archive before they accept official mail.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.archive import Archive
from relay.config import Config
from relay.directory.store import DirectoryStore
from relay.resolver import Resolver


@dataclass
class Services:
    directory: DirectoryStore
    archive: Archive | None = None  # None: archiving off, or a dry run (test-message)
    resolver: Resolver | None = None  # `[dns]`: built when the Services are

    @classmethod
    def build(cls, config: Config, archive: bool = True) -> Services:
        """`archive=False` for dry runs that must leave no trace.

        The directory opens (and migrates) its database on first use, so a relay
        whose policies never look anything up never creates one."""
        directory = DirectoryStore(config)
        return cls(directory=directory,
                   archive=Archive.open(config, directory) if archive and config.archive.enabled
                   else None,
                   resolver=Resolver.from_config(config))

    @property
    def dns(self) -> Resolver:
        """The `[dns]` resolver (built on first use where Services were made by hand)."""
        if self.resolver is None:
            from relay.config import DnsConfig

            self.resolver = Resolver(DnsConfig())
        return self.resolver

    async def aclose(self) -> None:
        if self.archive is not None:
            await self.archive.aclose()
        await self.directory.aclose()
