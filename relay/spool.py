"""The durable queue on disk.

`put()` returns only when the message and its envelope are in a file that is
fsynced and renamed into `active/`, and that directory is fsynced too: this is
what lets the SMTP front answer `250`. Concurrent puts share directory fsyncs
(group commit): one fsync covers every rename that happened before it began.

Layout under `state_dir/queue/`:
  tmp/            files being written (removed at start-up: never acknowledged)
  active/ID       envelope (one JSON line after a magic line) + the message bytes
  active/ID.json  delivery state (attempts, next try, per-recipient results)
  hold/           the same, for messages an administrator put on hold
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from relay.body import Body
from relay.durable import fsync_dir, replace_durably, write_durably
from relay.files import private_dir

MAGIC = b"RELAYQ1\n"
# relay.model.new_id(): hex digits, time first; letters and digits only, so no
# path, no hidden file and no state file (`ID.json`) can pass for a queue id
_QUEUE_ID = re.compile(r"[0-9A-Za-z]{1,64}")


def is_queue_id(name: str) -> bool:
    return _QUEUE_ID.fullmatch(name) is not None



@dataclass
class QueueEnvelope:
    queue_id: str
    sender: str
    recipients: list[str]
    arrival_time: float = field(default_factory=time.time)
    client_ip: str = ""
    listener: str = ""
    auth_login: str | None = None
    size: int = 0
    is_dsn: bool = False


@dataclass
class RecipientState:
    status: str = "pending"  # pending | delivered | failed
    reason: str = ""
    attempts: int = 0
    notified: bool = False  # failed, and the bounce is queued (or none is due)


@dataclass
class State:
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float = 0.0
    recipients: dict[str, RecipientState] = field(default_factory=dict)

    def pending(self, envelope: QueueEnvelope) -> list[str]:
        return [r for r in envelope.recipients
                if self.recipients.get(r, RecipientState()).status == "pending"]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        # state written before `notified` existed: a failed recipient was bounced at once
        rcpts = {k: RecipientState(**{"notified": v.get("status") == "failed", **v})
                 for k, v in data.pop("recipients", {}).items()}
        return cls(recipients=rcpts, **data)


class GroupSync:
    """fsync a directory so that each caller is covered by a sync that began after it asked."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor) -> None:
        self.path = path
        self._executor = executor
        self._lock = asyncio.Lock()
        self._started = 0
        self._completed = 0

    async def sync(self) -> None:
        needed = self._started + 1
        async with self._lock:
            if self._completed >= needed:
                return  # a sync that started after our rename already finished
            self._started += 1
            mine = self._started
            await asyncio.get_running_loop().run_in_executor(self._executor, fsync_dir, self.path)
            self._completed = mine


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.active = root / "active"
        self.hold_dir = root / "hold"
        for d in (self.tmp, self.active, self.hold_dir):
            private_dir(d, 0o700)
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="spool")
        self._active_sync = GroupSync(self.active, self._executor)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def recover(self) -> int:
        """Remove half-written files left by a crash; they were never acknowledged."""
        count = 0
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
            count += 1
        for d in (self.active, self.hold_dir):
            for leftover in d.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
        return count

    # --- writing ------------------------------------------------------------------
    async def put(self, envelope: QueueEnvelope, data: bytes) -> None:
        """Durably queue a message; when this returns a crash cannot lose it."""
        await self.prepare(envelope, data)
        await self.commit(envelope.queue_id)

    async def prepare(self, envelope: QueueEnvelope, data: bytes | Sequence[bytes | Body]
                      ) -> None:
        """First half of put(): the file is written and fsynced in tmp/, not yet queued.

        Lets the SMTP front archive at the same time and still queue nothing when the
        archive fails (abort); a crash before commit leaves only tmp/, which recover()
        removes, since no 250 was given for it."""
        pieces = [data] if isinstance(data, bytes) else list(data)
        envelope.size = sum(p.size if isinstance(p, Body) else len(p) for p in pieces)
        # its fields are plain values: vars() is asdict() without the deep copy
        head = MAGIC + json.dumps(vars(envelope)).encode() + b"\n"

        def content() -> Iterator[bytes]:  # a large message is copied from its file
            yield head
            for piece in pieces:
                yield from piece.chunks() if isinstance(piece, Body) else [piece]

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, write_durably,
                                   self.tmp / envelope.queue_id, content())

    async def commit(self, queue_id: str) -> None:
        os.rename(self.tmp / queue_id, self.active / queue_id)
        await self._active_sync.sync()

    def abort(self, queue_id: str) -> None:
        (self.tmp / queue_id).unlink(missing_ok=True)

    def save_state(self, queue_id: str, state: State) -> None:
        replace_durably(self.state_path(queue_id), json.dumps(asdict(state)).encode())

    def state_path(self, queue_id: str) -> Path:
        """Where the delivery state of QUEUE_ID is (beside its queue file)."""
        return self._find(queue_id).with_name(f"{queue_id}.json")

    def remove(self, queue_id: str, state_saved: bool = True) -> None:
        """After delivery. Not fsynced (Postfix does not either): a crash that loses the
        removal delivers the message again, the at-least-once promise; an fsync here
        cost one disk flush per message on the delivery path. `state_saved=False`: the
        caller knows there is no state file (one system call fewer per message)."""
        path = self._find(queue_id)
        if state_saved:
            path.with_name(f"{queue_id}.json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def hold(self, queue_id: str) -> None:
        self._move(queue_id, self.hold_dir)

    def release(self, queue_id: str) -> None:
        self._move(queue_id, self.active)

    def _move(self, queue_id: str, target: Path) -> None:
        source = self._find(queue_id)
        if source.parent == target:
            return
        state = source.with_name(f"{queue_id}.json")
        if state.exists():
            os.rename(state, target / state.name)
        os.rename(source, target / queue_id)
        fsync_dir(target)
        fsync_dir(source.parent)

    # --- reading ------------------------------------------------------------------
    def _find(self, queue_id: str) -> Path:
        """The queue file of QUEUE_ID; KeyError for anything but a queue id (`ID.json` is
        the state file beside it: deleting it would leave the message, issue 10)."""
        if not is_queue_id(queue_id):
            raise KeyError(queue_id)
        for d in (self.active, self.hold_dir):
            path = d / queue_id
            if path.exists():
                return path
        raise KeyError(queue_id)

    def is_held(self, queue_id: str) -> bool:
        return self._find(queue_id).parent == self.hold_dir

    def load(self, queue_id: str) -> tuple[QueueEnvelope, bytes]:
        loaded = self.load_within(queue_id, None)
        assert loaded is not None  # no limit
        return loaded

    def load_within(self, queue_id: str, limit: int | None
                    ) -> tuple[QueueEnvelope, bytes] | None:
        """The envelope and the message; None when the file is larger than LIMIT bytes
        (the queue runner reads those one at a time)."""
        with self._find(queue_id).open("rb") as fh:
            if limit is not None and os.fstat(fh.fileno()).st_size > limit:
                return None
            raw = fh.read()
        if not raw.startswith(MAGIC):
            raise ValueError(f"{queue_id}: not a queue file")
        header, _, data = raw[len(MAGIC):].partition(b"\n")
        return QueueEnvelope(**json.loads(header)), data

    def load_envelope(self, queue_id: str) -> QueueEnvelope:
        with self._find(queue_id).open("rb") as fh:
            if fh.readline() != MAGIC:
                raise ValueError(f"{queue_id}: not a queue file")
            return QueueEnvelope(**json.loads(fh.readline()))

    def load_state(self, queue_id: str) -> State:
        """The delivery state; ValueError when the file is there but unreadable."""
        return self.read_state(queue_id) or State()

    def read_state(self, queue_id: str) -> State | None:
        """The delivery state, None when no state file was ever written; ValueError when
        the file is there but unreadable."""
        try:
            return State.from_json(json.loads(self.state_path(queue_id).read_bytes()))
        except FileNotFoundError:
            return None
        except (TypeError, AttributeError) as exc:  # valid JSON of another shape
            raise ValueError(f"{queue_id}: bad delivery state: {exc}") from None

    def ids(self, held: bool | None = None) -> Iterator[str]:
        dirs = {None: (self.active, self.hold_dir), False: (self.active,),
                True: (self.hold_dir,)}[held]
        for d in dirs:
            for path in sorted(d.iterdir()):
                if is_queue_id(path.name):
                    yield path.name


def count(root: Path) -> tuple[int, int]:
    """(waiting, held) messages under a spool root, read-only: for a status page that
    must not create the spool's folders the way `Spool()` does."""
    found = []
    for sub in ("active", "hold"):
        with os.scandir(root / sub) as entries:
            found.append(sum(1 for e in entries if is_queue_id(e.name)))
    return found[0], found[1]
