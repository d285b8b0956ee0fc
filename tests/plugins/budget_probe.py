"""A site policy that misbehaves on request, to prove the inspection budget: what a
hostile message could make a content check do, without needing such a message.

Subject `BURN n`: n seconds of pure CPU in the worker's only thread; `HOG`: allocate
until memory runs out; `CRASH`: the worker process dies (SIGKILL to itself). Before
misbehaving it writes its process id to `pid_file`, so a test can kill it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

from policies.base import Policy, PolicyOptions
from relay.model import Finding, Stage, Transaction


class Options(PolicyOptions):
    pid_file: str = ""


class BudgetProbe(Policy):
    name = "budget_probe"
    stages = frozenset({Stage.DATA})
    Options = Options

    async def check(self, stage: Stage, tx: Transaction, recipient: str | None = None
                    ) -> Sequence[Finding]:
        assert tx.message is not None and isinstance(self.options, Options)
        subject = tx.message.decoded("Subject") or ""
        if subject.split()[:1] not in (["BURN"], ["HOG"], ["CRASH"]):
            return []
        if self.options.pid_file:
            with open(self.options.pid_file, "w") as fh:
                fh.write(str(os.getpid()))
        if subject.startswith("BURN"):
            until = time.monotonic() + float(subject.split()[1])
            while time.monotonic() < until:  # no await: the worker's loop is stuck here
                pass
        elif subject.startswith("HOG"):
            hoard = []
            while True:
                hoard.append(bytearray(64 * 1024 * 1024))
        else:
            os.kill(os.getpid(), signal.SIGKILL)
        return []
