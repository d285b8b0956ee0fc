"""The archive of official mailboxes (Điều 8), with tamper evidence for auditors.

`store.Archive` appends and queries, `chain` defines the hashes and signatures,
`blobs` keeps the message bytes, `verify` and `export` are for auditors.
"""

from relay.archive.store import Archive, ArchiveError, Filters, Party

__all__ = ["Archive", "ArchiveError", "Filters", "Party"]
