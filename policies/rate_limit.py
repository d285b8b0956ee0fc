"""`rate_limit` (Điều 5.1, 7.4): messages per logged-in mailbox and per client IP,
counted over every relay node (`relay.ratelimit`: the directory database).

A mailbox that suddenly sends hundreds of messages an hour has usually had its
password stolen (Điều 7.4): `rate_limit.login` stops it at MAIL with a temporary
failure (by default) and the decision log, the metrics and `relay directory
mailbox show` name it. `rate_limit.ip` counts per client address (per /64 for
IPv6); trusted networks are not counted. The database unreachable is
`rate_limit.temperror` (tempfail: never a silent pass).

    per_login = "500/1h"   # messages per window; "" turns the count off
    per_ip = "2000/1h"
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import field_validator, model_validator

from policies.base import Context, Policy, PolicyOptions
from relay.metrics import RATE_LIMITED
from relay.model import Action, Finding, Stage, Transaction
from relay.ratelimit import Limit, RateLimiter, Usage, ip_key, parse_limit

log = logging.getLogger(__name__)

ARTICLE = "Điều 5.1"


class Options(PolicyOptions):
    action: Action = Action.TEMPFAIL
    per_login: Limit | None = parse_limit("500/1h")
    per_ip: Limit | None = parse_limit("2000/1h")

    @field_validator("per_login", "per_ip", mode="before")
    @classmethod
    def _limit(cls, value: object) -> Limit | None:
        if value is None or value == "":
            return None
        return value if isinstance(value, Limit) else parse_limit(value)

    @model_validator(mode="after")
    def _defaults(self) -> Options:
        self.actions.setdefault("rate_limit.temperror", Action.TEMPFAIL)
        return self


class RateLimitPolicy(Policy):
    name = "rate_limit"
    articles = (ARTICLE,)
    stages = frozenset({Stage.MAIL})
    Options = Options
    codes = {
        "rate_limit.login": "the logged-in mailbox sent more messages than per_login allows",
        "rate_limit.ip": "the client IP (IPv6: its /64) sent more than per_ip allows",
        "rate_limit.temperror": "the rate counters (directory database) are unreachable",
    }

    def __init__(self, options: PolicyOptions, context: Context) -> None:
        super().__init__(options, context)
        assert isinstance(options, Options)
        self.opts = options
        self.limiter = RateLimiter(context.config.directory_url)

    async def check(self, stage: Stage, tx: Transaction, recipient: str | None = None
                    ) -> Sequence[Finding]:
        checks: list[tuple[str, str, Limit]] = []
        if tx.auth_login and self.opts.per_login:
            login = self.context.services.directory.normalise_login(tx.auth_login)
            checks.append(("login", login, self.opts.per_login))
        if tx.client_ip and not tx.trusted and self.opts.per_ip:
            try:
                checks.append(("ip", ip_key(tx.client_ip), self.opts.per_ip))
            except ValueError:
                pass
        findings = []
        for scope, key, limit in checks:
            try:
                usage = await self.limiter.hit(scope, key, limit)
            except Exception as exc:
                log.error("rate_limit: counting %s %s failed: %s", scope, key, exc)
                return [self.finding(
                    "rate_limit.temperror", ARTICLE,
                    "Không kiểm tra được giới hạn gửi thư, xin gửi lại sau",
                    "Could not check the sending rate limit, try again later",
                    reply_code=550, status="5.3.0", tempfail_code=451,
                    details={"scope": scope, "key": key, "error": str(exc)[:200]})]
            if usage.over:
                RATE_LIMITED.labels(scope).inc()
                findings.append(self._over(usage))
        return findings

    def _over(self, usage: Usage) -> Finding:
        limit = usage.limit
        if usage.scope == "login":
            return self.finding(
                "rate_limit.login", ARTICLE,
                f"Hộp thư {usage.key} đã gửi quá {limit.count} thư trong {limit}; "
                f"nếu không phải bạn gửi, hãy báo Văn phòng UBND tỉnh (Điều 7.4)",
                f"Mailbox {usage.key} sent more than {limit.count} messages "
                f"({limit}); if this was not you, tell the provincial office (Article 7.4)",
                reply_code=550, status="5.7.1", tempfail_code=450, details=usage.as_dict())
        return self.finding(
            "rate_limit.ip", ARTICLE,
            f"Địa chỉ {usage.key} đã gửi quá {limit.count} thư ({limit}), xin gửi lại sau",
            f"{usage.key} sent more than {limit.count} messages ({limit}), try again later",
            reply_code=550, status="5.7.1", tempfail_code=450, details=usage.as_dict())

    async def close(self) -> None:
        self.limiter.close()
