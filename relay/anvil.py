"""Connection counts for the whole relay, as Postfix's anvil keeps them.

Every front process asks before it serves a new client: at most
`server.max_connections` sessions in all, at most `max_connections_per_ip` from
one client and `connection_rate_limit` new ones per minute from it (IPv6 clients
count per /64, the smallest network one subscriber is usually given). Trusted
networks are exempt from the per-client limits, as Postfix exempts $mynetworks.
With several front processes the counts live in the supervisor, which forgets a
front's connections when that front dies.
"""

from __future__ import annotations

import collections
import ipaddress
import time
from collections.abc import Callable

from relay.model import Reply

TOO_BUSY = Reply(421, "4.7.0", ("Máy chủ đang quá tải, xin thử lại sau",
                                "Too many connections, try again later"))
TOO_MANY_FROM_YOU = Reply(421, "4.7.0", (
    "Quá nhiều kết nối đồng thời từ địa chỉ của bạn, xin thử lại sau",
    "Too many concurrent connections from your address, try again later"))
TOO_FAST = Reply(421, "4.7.0", ("Kết nối quá nhanh từ địa chỉ của bạn, xin thử lại sau",
                                "Too many connections per minute from your address, "
                                "try again later"))
REFUSALS = {"total": TOO_BUSY, "per_ip": TOO_MANY_FROM_YOU, "rate": TOO_FAST}
RATE_WINDOW = 60.0


def client_key(ip: str) -> str:
    """What one client is: its IPv4 address, or the /64 of its IPv6 address (IPv4-mapped
    as IPv4). The one rule for connection limits, AUTH lockout and rate limits."""
    if ":" not in ip:  # IPv4 (or not an address): itself; parsing it was 7 us per call
        return ip
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Anvil:
    def __init__(self, max_connections: int, per_ip: int, rate: int,
                 exempt: Callable[[str], bool]) -> None:
        self.max_connections, self.per_ip, self.rate = max_connections, per_ip, rate
        self.exempt = exempt
        self.total = 0
        self.open: collections.Counter[tuple[int, str]] = collections.Counter()  # (front, key)
        self.by_key: collections.Counter[str] = collections.Counter()
        self.recent: dict[str, collections.deque[float]] = {}

    def admit(self, front: int, ip: str) -> str | None:
        """None when the connection may be served (and is counted), else why not."""
        if self.total >= self.max_connections:
            return "total"
        key = client_key(ip)
        if ip and not self.exempt(ip):
            if self.per_ip and self.by_key[key] >= self.per_ip:
                return "per_ip"
            if self.rate and not self._within_rate(key):
                return "rate"
        self.total += 1
        self.open[(front, key)] += 1
        self.by_key[key] += 1
        return None

    def release(self, front: int, ip: str) -> None:
        key = client_key(ip)
        if self.open[(front, key)] <= 0:
            return
        self.open[(front, key)] -= 1
        self.by_key[key] -= 1
        self.total -= 1
        if not self.open[(front, key)]:
            del self.open[(front, key)]
        if not self.by_key[key]:
            del self.by_key[key]

    def forget(self, front: int) -> None:
        """A front died: its connections died with it."""
        for (f, key), n in list(self.open.items()):
            if f == front:
                for _ in range(n):
                    self.release(front, key)

    def _within_rate(self, key: str) -> bool:
        now = time.monotonic()
        times = self.recent.setdefault(key, collections.deque())
        while times and times[0] <= now - RATE_WINDOW:
            times.popleft()
        if len(times) >= self.rate:
            return False
        times.append(now)
        if len(self.recent) > 100_000:  # keys of clients gone quiet
            for k in [k for k, q in self.recent.items() if not q or q[-1] <= now - RATE_WINDOW]:
                del self.recent[k]
        return True


class LocalAnvil:
    """The anvil of a relay that runs in one process: asked directly."""

    def __init__(self, anvil: Anvil) -> None:
        self.anvil = anvil

    async def admit(self, ip: str) -> Reply | None:
        why = self.anvil.admit(0, ip)
        return None if why is None else REFUSALS[why]

    def release(self, ip: str) -> None:
        self.anvil.release(0, ip)
