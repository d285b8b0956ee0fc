"""Sessions in signed cookies: nothing to store per session, any node can check them.

The cookie holds the user name, the account's session epoch (bumped by logout,
disable and passwd, so those end every cookie at once), the CSRF token of the
session, the access reason the user gave, and when the session began. It is signed
with a key kept in the database (`Accounts.secret`) and re-signed on every request:
its timestamp is the last use, checked against `session_timeout`; the start against
`session_lifetime`. Visitors who are not signed in get a session too (no user), so
the login form carries a CSRF token.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "relay_session"
MAX_COOKIE = 4096


@dataclass(frozen=True)
class Session:
    user: str | None = None
    epoch: int = 0
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    reason: str = ""
    started: float = field(default_factory=time.time)

    def signed_in(self, user: str, epoch: int) -> Session:
        """A fresh session (new CSRF token, new start) for a user who just logged in:
        nothing of the anonymous one survives (no session fixation)."""
        return Session(user=user, epoch=epoch)

    def with_reason(self, reason: str) -> Session:
        return replace(self, reason=reason)


class SessionCodec:
    def __init__(self, secret: str, timeout: float, lifetime: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="relay-web-session")
        self.timeout = timeout
        self.lifetime = lifetime

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps({"u": session.user, "e": session.epoch,
                                       "c": session.csrf, "r": session.reason,
                                       "s": session.started})

    def loads(self, value: str | None) -> Session | None:
        """The session, or None when the cookie is missing, forged, idle or too old."""
        if not value or len(value) > MAX_COOKIE:
            return None
        try:
            data: Any = self._serializer.loads(value, max_age=self.timeout)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(data, dict):
            return None
        try:
            session = Session(user=data["u"], epoch=int(data["e"]), csrf=str(data["c"]),
                              reason=str(data["r"]), started=float(data["s"]))
        except (KeyError, TypeError, ValueError):
            return None
        if session.user is not None and not isinstance(session.user, str):
            return None
        if time.time() - session.started > self.lifetime:
            return None
        return session
