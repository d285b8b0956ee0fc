"""`antivirus`: every message is scanned once by clamd (Điều 5.1: the Office runs
anti-virus; Điều 7.5: no one spreads viruses through the provincial mail system).

The whole message is streamed to clamd with INSTREAM (clamd unpacks the MIME
parts and archives itself). Outcomes:

- `antivirus.infected`: clamd found a signature -> `554 5.7.1` naming it.
- `antivirus.limits_exceeded`: clamd could not look inside everything (an archive over
  MaxScanSize/MaxFileSize/MaxFiles/MaxRecursion). clamd reports this only with
  `AlertExceedsMax yes` in clamd.conf; without it such an archive comes back *clean*.
  Administrators: set `AlertExceedsMax yes`.
- `antivirus.unavailable`: clamd unreachable, too slow or answering an error. A scan
  error is never a clean result: the default is `451 4.7.1` (fail closed, the client
  retries later). `fail_open = true` passes the message instead, with the header
  `X-Virus-Status: Unchecked`, and counts it (`relay_antivirus_scans_total{result="unchecked"}`).
- `antivirus.too_large`: larger than `max_size` (keep it at or below clamd's
  StreamMaxLength): not scanned; rejected `552 5.3.4` by default, and treated like
  `unavailable` (tagged) when `fail_open` is set.

The result is kept in `tx.cache["antivirus"]`, so a message is scanned once even
when several fronts or policies ask.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter
from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from policies.base import Context, Policy, PolicyOptions
from relay.clamd import ClamdClient, ScanResult, parse_address
from relay.config import Duration
from relay.model import Action, Finding, Stage, Transaction

log = logging.getLogger(__name__)

ARTICLE = "Điều 7.5"
UNCHECKED = ("X-Virus-Status", "Unchecked")

SCANS = Counter("relay_antivirus_scans", "Messages scanned by clamd, by result", ["result"])


class Options(PolicyOptions):
    clamd: StrictStr = "/run/clamav/clamd.ctl"  # Unix socket path, or HOST:PORT for TCP
    timeout: Duration = 30.0  # the whole scan: connect, stream, answer
    max_size: StrictInt = Field(25 * 1024 * 1024, ge=1024)  # clamd StreamMaxLength default
    fail_open: StrictBool = False
    retries: StrictInt = Field(1, ge=0, le=5)  # reconnects while clamd restarts
    retry_delay: Duration = 0.5

    @field_validator("clamd")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Options:
        # explicit `actions` win; otherwise an unchecked message tempfails (fail closed)
        # or is tagged (fail open)
        unchecked = Action.TAG if self.fail_open else Action.TEMPFAIL
        self.actions.setdefault("antivirus.unavailable", unchecked)
        if self.fail_open:
            self.actions.setdefault("antivirus.too_large", Action.TAG)
        return self


class AntivirusPolicy(Policy):
    name = "antivirus"
    articles = ('Điều 5.1', 'Điều 7.5')
    stages = frozenset({Stage.DATA})
    Options = Options
    codes = {
        "antivirus.infected": "clamd found a virus signature",
        "antivirus.limits_exceeded": "clamd could not scan everything (needs AlertExceedsMax)",
        "antivirus.unavailable": "clamd unreachable, timed out or answered an error",
        "antivirus.too_large": "message larger than max_size, not scanned",
    }

    def __init__(self, options: PolicyOptions, context: Context) -> None:
        super().__init__(options, context)
        assert isinstance(options, Options)
        self.client = ClamdClient(options.clamd, options.timeout, options.retries,
                                  options.retry_delay)

    async def scan(self, tx: Transaction) -> ScanResult | None:
        """The clamd verdict for this message, scanned at most once; None when too large."""
        assert tx.message is not None and isinstance(self.options, Options)
        if "antivirus" not in tx.cache:
            raw = tx.message.raw
            if len(raw) > self.options.max_size:
                tx.cache["antivirus"] = None
            else:
                result = await self.client.instream(raw)
                tx.cache["antivirus"] = result
                log.debug("clamd %s in %.3fs for %s", result.status, result.seconds, tx.queue_id)
        return tx.cache["antivirus"]

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        assert tx.message is not None and isinstance(self.options, Options)
        result = await self.scan(tx)
        if result is None:
            size, limit = len(tx.message.raw), self.options.max_size
            finding = self.finding(
                "antivirus.too_large", ARTICLE,
                f"Thư quá lớn để quét virus: {size} byte, giới hạn {limit} byte",
                f"Message too large to scan for viruses: {size} bytes, limit {limit} bytes",
                reply_code=552, status="5.3.4", tempfail_code=452, tag=UNCHECKED,
                details={"size": size, "limit": limit},
            )
            return [self._count(finding, "too_large")]
        if result.status == "clean":
            SCANS.labels("clean").inc()
            return []
        if result.status == "infected":
            assert result.signature is not None
            if result.signature.startswith("Heuristics.Limits.Exceeded"):
                finding = self.finding(
                    "antivirus.limits_exceeded", ARTICLE,
                    f"Không quét hết được tệp đính kèm (vượt giới hạn quét: {result.signature})",
                    f"Attachment could not be fully scanned (scan limits exceeded: "
                    f"{result.signature})",
                    reply_code=554, status="5.7.1", details={"signature": result.signature},
                )
                return [self._count(finding, "limits_exceeded")]
            finding = self.finding(
                "antivirus.infected", ARTICLE,
                f"Thư có virus: {result.signature}",
                f"Message contains a virus: {result.signature}",
                reply_code=554, status="5.7.1", details={"signature": result.signature},
            )
            return [self._count(finding, "infected")]
        log.warning("clamd scan failed for %s: %s", tx.queue_id, result.error)
        finding = self.finding(
            "antivirus.unavailable", ARTICLE,
            "Tạm thời không quét được virus, xin gửi lại sau",
            "Virus scanner temporarily unavailable, try again later",
            reply_code=554, status="5.7.1", tempfail_code=451, tag=UNCHECKED,
            details={"error": result.error},
        )
        return [self._count(finding, "error")]

    def _count(self, finding: Finding, result: str) -> Finding:
        action = self.options.action_for(finding.code)
        if action in (Action.TAG, Action.LOG) and result in ("error", "too_large"):
            # passed on without a verdict: count it so monitoring sees fail-open at work
            log.warning("antivirus: message passed unchecked (%s)", finding.details)
            result = "unchecked"
        SCANS.labels(result).inc()
        return finding
