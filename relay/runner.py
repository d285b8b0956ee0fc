"""The queue runner: delivers what the spool holds, retries with backoff, bounces.

It keeps only a schedule in memory; the spool is the truth, so a restart (or a
`kill -9`) resumes from whatever `active/` holds. Delivery is at least once: a
crash between a delivery and the state update can deliver a message twice,
never zero times.
"""

from __future__ import annotations

import asyncio
import logging
import time

from relay import maillog
from relay.config import Config
from relay.delivery import Router
from relay.dsn import build_dsn
from relay.metrics import DELIVERIES, age_of_id, batched_counter, queue_metrics
from relay.model import new_id
from relay.spool import QueueEnvelope, RecipientState, Spool, State

log = logging.getLogger(__name__)


LARGE_MESSAGE = 4 * 1024 * 1024
FRESH_INLINE = 256 * 1024  # a new message read on the loop (a larger one in a thread)


def backoff(attempts: int, minimum: float, maximum: float) -> float:
    return min(maximum, minimum * 2 ** max(0, attempts - 1))


class QueueRunner:
    def __init__(self, config: Config, spool: Spool, router: Router) -> None:
        self.config = config
        self.spool = spool
        self.router = router
        self._due: dict[str, float] = {}
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.queue.concurrency)
        self._large = asyncio.Semaphore(1)
        self._stopping = False
        # attempts whose state could not be saved, and failed attempts in a row (in memory)
        self._unsaved: dict[str, State] = {}
        self._errors: dict[str, int] = {}
        # announced by submit() and not tried yet: just written, so in the page cache,
        # and without a delivery state
        self._fresh: set[str] = set()
        self._gauges = queue_metrics()
        self._gauged = 0.0  # monotonic time the gauges were last set

    def submit(self, queue_id: str) -> None:
        """A new message is on disk: try it now."""
        self._due[queue_id] = 0.0
        self._fresh.add(queue_id)
        self._wake.set()

    def rescan(self) -> None:
        """Pick up what changed on disk (restart, `queue release`, `queue flush`)."""
        present = set()
        for qid in self.spool.ids(held=False):
            present.add(qid)
            if qid in self._unsaved or qid in self._errors:
                continue  # the file is behind: keep the backoff computed in memory
            try:
                self._due[qid] = self.spool.load_state(qid).next_attempt
            except KeyError:
                continue
            except ValueError:
                self._due[qid] = 0.0  # unreadable state: the attempt starts afresh
        for qid in list(self._due):
            if qid not in present and qid not in self._inflight:
                self._forget(qid)
        self._wake.set()

    async def run(self) -> None:
        self.rescan()
        last_scan = time.monotonic()
        while not self._stopping:
            now = time.time()
            for qid, due in list(self._due.items()):
                if due <= now and qid not in self._inflight:
                    self._inflight.add(qid)
                    task = asyncio.create_task(self._attempt(qid))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            waiting = [d for q, d in self._due.items() if q not in self._inflight]
            timeout = self.config.queue.scan_interval
            if waiting:
                timeout = max(0.05, min(timeout, min(waiting) - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            self._set_gauges()
            if time.monotonic() - last_scan >= self.config.queue.scan_interval:
                self.rescan()
                last_scan = time.monotonic()

    def _set_gauges(self, every: float = 1.0) -> None:
        """Queue size and the age of its oldest message, at most once a second (ids
        begin with their time, so the oldest is the smallest: no file is read)."""
        if time.monotonic() - self._gauged < every:
            return
        self._gauged = time.monotonic()
        self._gauges.messages.set(len(self._due))
        oldest = min(self._due, default=None)
        self._gauges.oldest_age.set((oldest and age_of_id(oldest)) or 0)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)

    async def _attempt(self, qid: str) -> None:
        try:
            async with self._slots:
                await self._deliver(qid)
            self._errors.pop(qid, None)
        except KeyError:  # deleted or held before the attempt began
            self._forget(qid)
        except Exception:
            # the queue file or its state could not be read or written (a full disk, a
            # bug): back off as for a failed delivery; what the attempt learnt stays in
            # self._unsaved, so a recipient that got the message does not get it again
            errors = self._errors[qid] = self._errors.get(qid, 0) + 1
            log.exception("queue %s: delivery attempt failed (%d in a row)", qid, errors)
            q = self.config.queue
            self._due[qid] = time.time() + backoff(errors, q.min_backoff, q.max_backoff)
        finally:
            self._inflight.discard(qid)
            self._wake.set()

    def _forget(self, qid: str) -> None:
        self._due.pop(qid, None)
        self._unsaved.pop(qid, None)
        self._errors.pop(qid, None)
        self._fresh.discard(qid)

    def _read(self, qid: str, limit: int | None, state: State | None, fresh: bool = False
              ) -> tuple[QueueEnvelope, bytes, State, bool] | None:
        """The message and its delivery state in one thread hop (a hop costs more CPU than
        these reads): (envelope, data, state, whether a state file may exist), or None
        when the message is larger than LIMIT bytes."""
        loaded = self.spool.load_within(qid, limit)
        if loaded is None:
            return None
        if fresh:  # never tried: no state was ever saved
            return *loaded, State(), False
        if state is not None:  # what the last attempt learnt, not saved yet
            return *loaded, state, True
        try:
            saved = self.spool.read_state(qid)
        except ValueError as exc:
            # at least once: without the state everyone pending is tried again, once
            log.error("queue %s: unreadable delivery state, starting afresh: %s", qid, exc)
            return *loaded, State(), True
        return *loaded, saved or State(), saved is not None

    async def _deliver(self, qid: str) -> None:
        """One attempt: small messages at once, a large one (over LARGE_MESSAGE) only when
        no other large one is in delivery: a delivery holds the message (and the SMTP
        client copies it), so several would cost several times their size."""
        try:
            if self.spool.is_held(qid):
                self._due.pop(qid, None)
                return
            unsaved = self._unsaved.get(qid)
            if qid in self._fresh:
                # on the loop: reading a file just written (from the page cache) costs
                # less than the thread hop, 55-110 us of CPU here
                self._fresh.discard(qid)
                loaded = self._read(qid, FRESH_INLINE, None, fresh=True)
            else:
                loaded = None
            if loaded is None:
                loaded = await asyncio.to_thread(self._read, qid, LARGE_MESSAGE, unsaved)
        except KeyError:  # delivered, deleted or held meanwhile
            self._forget(qid)
            return
        if loaded is not None:
            await self._attempt_loaded(qid, *loaded)
            return
        async with self._large:  # a KeyError here is handled by _attempt
            loaded = await asyncio.to_thread(self._read, qid, None, unsaved)
            assert loaded is not None  # no limit
            await self._attempt_loaded(qid, *loaded)

    async def _attempt_loaded(self, qid: str, env: QueueEnvelope, data: bytes, state: State,
                              state_saved: bool) -> None:
        """The router answers for every recipient (a backend's exception is a temporary
        result), the state is on disk before a bounce is queued, and the queue lifetime
        ends every message (issue 10, item 1)."""
        pending = state.pending(env)
        started = time.monotonic()
        results = await self.router.deliver(env, data, pending) if pending else {}
        transmission = time.monotonic() - started
        now = time.time()
        for rcpt in pending:
            result = results[rcpt]
            batched_counter(DELIVERIES, result.status).inc()
            maillog.delivered(qid, rcpt, result.status, result.reply,
                              *self.router.describe(rcpt), now - env.arrival_time,
                              transmission)
            rs = state.recipients.setdefault(rcpt, RecipientState())
            rs.attempts += 1
            rs.reason = result.reply
            if result.ok:
                rs.status = "delivered"
            elif result.status == "permanent":
                rs.status = "failed"
        state.attempts += 1
        state.last_attempt = now
        expired = now - env.arrival_time > self.config.queue.max_queue_lifetime
        if expired:
            for rcpt in state.pending(env):
                rs = state.recipients.setdefault(rcpt, RecipientState())
                rs.status = "failed"
                rs.reason = rs.reason or "delivery time expired"
        q = self.config.queue
        state.next_attempt = now + backoff(state.attempts, q.min_backoff, q.max_backoff)
        self._unsaved[qid] = state
        unnotified = {r: rs.reason for r, rs in state.recipients.items()
                      if rs.status == "failed" and not rs.notified}
        if unnotified:
            # recorded first: if the bounce cannot be queued, the next attempt bounces
            # again, it does not deliver again
            await asyncio.to_thread(self.spool.save_state, qid, state)
            state_saved = True
            await self._bounce(env, data, unnotified, expired)
            for rcpt in unnotified:
                state.recipients[rcpt].notified = True
        if not state.pending(env):
            # in a thread: on ext4 an unlink waits for the journal commit the fronts'
            # fsyncs start (py-spy found the loop blocked there a quarter of the time)
            await asyncio.to_thread(self.spool.remove, qid, state_saved)
            self._forget(qid)
            maillog.removed(qid)
            return
        await asyncio.to_thread(self.spool.save_state, qid, state)
        del self._unsaved[qid]
        self._due[qid] = state.next_attempt

    async def _bounce(self, env: QueueEnvelope, data: bytes, failures: dict[str, str],
                      expired: bool) -> None:
        """Queue an RFC 3464 DSN to the sender; never to the null sender, never for a DSN."""
        if env.is_dsn or not env.sender:
            log.info("queue %s: no bounce for null sender; dropped %s", env.queue_id,
                     ", ".join(failures))
            return
        dsn = build_dsn(env, data, failures, self.config.server.hostname, expired=expired)
        bounce = QueueEnvelope(queue_id=new_id(), sender="", recipients=[env.sender], is_dsn=True)
        await self.spool.put(bounce, dsn)
        maillog.bounced(env.queue_id, bounce.queue_id)
        maillog.queued(bounce.queue_id, "", len(dsn), 1)
        self.submit(bounce.queue_id)
