"""The provincial directory (danh bạ điện tử, Điều 4): schema, rules, admin and the relay store."""

from relay.directory.admin import Directory, DirectoryError
from relay.directory.store import DirectoryStore, MailboxInfo

__all__ = ["Directory", "DirectoryError", "DirectoryStore", "MailboxInfo"]
