"""The queue runner: delivers what the spool holds, retries with backoff, bounces.

It keeps only a schedule in memory; the spool is the truth, so a restart (or a
`kill -9`) resumes from whatever `active/` holds. Delivery is at least once: a
crash between a delivery and the state update can deliver a message twice,
never zero times.
"""

from __future__ import annotations

import asyncio
import heapq
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
        self._due: dict[str, float] = {}  # when each waiting message is due
        # the same as a heap, soonest first: each wake looks at what is due, not at the
        # whole queue (a backlog of 100,000 deferred messages made every wake walk them
        # all); entries that no longer match _due are dropped when they come up
        self._heap: list[tuple[float, str]] = []
        self._touched: set[str] = set()  # scheduled or forgotten while a rescan reads
        self._scanning: asyncio.Task[None] | None = None
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.queue.concurrency)
        self._large = asyncio.Semaphore(1)
        self._stopping = False
        # attempts whose state could not be saved, and failed attempts in a row (in memory)
        self._unsaved: dict[str, State] = {}
        self._errors: dict[str, int] = {}
        # announced by submit() and not tried yet: just written, so in the page cache
        # (a state file it may have, after `queue flush`, is looked for all the same)
        self._fresh: set[str] = set()
        self._gauges = queue_metrics()
        self._gauged = 0.0  # monotonic time the gauges were last set

    def submit(self, queue_id: str) -> None:
        """A new message is on disk: try it now."""
        self._schedule(queue_id, 0.0)
        self._fresh.add(queue_id)
        self._wake.set()

    def _schedule(self, qid: str, due: float) -> None:
        self._touched.add(qid)
        if self._due.get(qid) != due:
            self._due[qid] = due
            heapq.heappush(self._heap, (due, qid))
            if len(self._heap) > 2 * len(self._due) + 1000:  # mostly outdated entries
                self._heap = [(d, q) for q, d in self._due.items()]
                heapq.heapify(self._heap)

    def rescan(self) -> None:
        """Pick up what changed on disk (restart, `queue release`, `queue flush`); the
        files are read in a thread, so a large queue does not stop the loop meanwhile."""
        if self._scanning is None or self._scanning.done():
            self._scanning = asyncio.get_running_loop().create_task(self._rescan())

    async def _rescan(self) -> None:
        self._touched.clear()
        found = await asyncio.to_thread(self._read_schedule)
        # where the file is behind what is known here (an attempt ran meanwhile, or its
        # state could not be saved), what is known here stays
        known = self._unsaved.keys() | self._errors.keys() | self._inflight | self._touched
        for qid, due in found.items():
            if qid not in known:
                self._schedule(qid, due)
        for qid in list(self._due):
            if qid not in found and qid not in self._inflight and qid not in self._touched:
                self._forget(qid)
        self._wake.set()

    def _read_schedule(self) -> dict[str, float]:
        """When each message in active/ is due, from its delivery state."""
        found: dict[str, float] = {}
        for qid in self.spool.ids(held=False):
            try:
                found[qid] = self.spool.load_state(qid).next_attempt
            except KeyError:
                continue
            except ValueError:
                found[qid] = 0.0  # unreadable state: the attempt starts afresh
        return found

    def _start_due(self) -> float | None:
        """Start the attempts that are due, as many as may run; when the next one is due
        (None: nothing waits, or every slot is taken)."""
        now = time.time()
        while self._heap and len(self._inflight) < self.config.queue.concurrency:
            due, qid = self._heap[0]
            if self._due.get(qid) != due or qid in self._inflight:
                heapq.heappop(self._heap)  # outdated, or being attempted already
                continue
            if due > now:
                return due
            heapq.heappop(self._heap)
            self._inflight.add(qid)
            task = asyncio.create_task(self._attempt(qid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    async def run(self) -> None:
        self.rescan()
        assert self._scanning is not None
        await self._scanning
        last_scan = time.monotonic()
        while not self._stopping:
            following = self._start_due()
            timeout = self.config.queue.scan_interval
            if following is not None:
                timeout = max(0.05, min(timeout, following - time.time()))
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
            self._schedule(qid, time.time() + backoff(errors, q.min_backoff, q.max_backoff))
        finally:
            self._inflight.discard(qid)
            self._wake.set()

    def _forget(self, qid: str) -> None:
        self._touched.add(qid)
        self._due.pop(qid, None)
        self._unsaved.pop(qid, None)
        self._errors.pop(qid, None)
        self._fresh.discard(qid)

    def _read(self, qid: str, limit: int | None, state: State | None
              ) -> tuple[QueueEnvelope, bytes, State, bool] | None:
        """The message and its delivery state in one thread hop (a hop costs more CPU than
        these reads): (envelope, data, state, whether a state file may exist), or None
        when the message is larger than LIMIT bytes."""
        loaded = self.spool.load_within(qid, limit)
        if loaded is None:
            return None
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
                loaded = self._read(qid, FRESH_INLINE, unsaved)
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
        self._schedule(qid, state.next_attempt)

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
