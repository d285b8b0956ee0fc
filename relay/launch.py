"""The `relay` command's first step, before anything imports prometheus_client.

The daemons (`relay serve`, `relay milter`) run in several processes: front
processes and inspection workers count into files that the metrics endpoint
sums (prometheus_client's multiprocess mode). That mode is chosen by an
environment variable read when prometheus_client is first imported, so it is set
here, before the CLI and everything it imports are loaded.
"""

from __future__ import annotations

import os
import sys
import tempfile

DAEMONS = ("serve", "milter")


def main() -> None:
    if (len(sys.argv) > 1 and sys.argv[1] in DAEMONS
            and "PROMETHEUS_MULTIPROC_DIR" not in os.environ):
        base = os.environ.get("RUNTIME_DIRECTORY") or None  # systemd's RuntimeDirectory=
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix=f"relay-{sys.argv[1]}-metrics-", dir=base)
        os.environ["RELAY_METRICS_DIR_OWNER"] = str(os.getpid())  # who removes it at exit
    from relay.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
