"""The one exception the archive raises for things an administrator can fix."""

from __future__ import annotations


class ArchiveError(Exception):
    """The archive cannot do what was asked; str() is for the administrator."""
