"""The stores policies and fronts use, built once per configuration load.

The engine hands them to every policy through `Context.services`; the fronts use
the directory for AUTH, the archive before they accept official mail, and the
petitions service after (Điều 8).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.archive import Archive
from relay.config import Config
from relay.directory.store import DirectoryStore
from relay.petitions import Petitions
from relay.resolver import Resolver


@dataclass
class Services:
    directory: DirectoryStore
    archive: Archive | None = None  # None: archiving off, or a dry run (test-message)
    petitions: Petitions | None = None  # None: [petitions] off, or a dry run
    resolver: Resolver | None = None  # `[dns]`: built when the Services are

    @classmethod
    def build(cls, config: Config, archive: bool = True) -> Services:
        """`archive=False` for dry runs that must leave no trace (no petitions either).

        The directory opens (and migrates) its database on first use, so a relay
        whose policies never look anything up never creates one."""
        directory = DirectoryStore(config)
        archived = Archive.open(config, directory) if archive and config.archive.enabled \
            else None
        petitions = Petitions.open(config, directory, archived) \
            if archive and config.petitions.enabled else None
        return cls(directory=directory, archive=archived, petitions=petitions,
                   resolver=Resolver.from_config(config))

    @property
    def dns(self) -> Resolver:
        """The `[dns]` resolver (built on first use where Services were made by hand)."""
        if self.resolver is None:
            from relay.config import DnsConfig

            self.resolver = Resolver(DnsConfig())
        return self.resolver

    async def aclose(self) -> None:
        if self.petitions is not None:
            await self.petitions.aclose()
        if self.archive is not None:
            await self.archive.aclose()
        await self.directory.aclose()
