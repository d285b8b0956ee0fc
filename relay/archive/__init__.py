"""The archive of official mailboxes (Điều 8), with tamper evidence for auditors.

`store.Archive` is the one way in; behind it `parties` (who is archived), `writer`
(append, group commit), `signing` (checkpoints), `access` (the access log), `query`
and `retention` (holds, purges) each do one job. `chain` defines the hashes and
signatures, `blobs` keeps the message bytes, `verify` and `export` are for auditors.
"""

from relay.archive.errors import ArchiveError
from relay.archive.parties import Party
from relay.archive.query import Filters
from relay.archive.retention import PurgeReport
from relay.archive.store import Archive

__all__ = ["Archive", "ArchiveError", "Filters", "Party", "PurgeReport"]
