"""Several nodes share one PostgreSQL database: case numbers never collide."""

from __future__ import annotations

import json
import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from relay.petitions.store import Incoming, PetitionStore
from tests.fixtures.relayproc import wait_for
from tests.petitions_helpers import INTAKE, citizen_mail, petitions_config

PER_NODE = 12


def test_two_relay_processes_on_one_database_never_share_a_number(relay_factory, sink,
                                                                  pg_url):
    nodes = [relay_factory(
        start=False,
        server={"trusted_networks": ["127.0.0.0/8"], "hostname": f"mx{n}.dienbien.gov.vn"},
        outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
        directory={"url": pg_url},
        archive={"blob_store": "database"},
        petitions={"enabled": True}) for n in range(2)]
    for node in nodes:
        node.start()

    def burst(node: int) -> None:
        with smtplib.SMTP("127.0.0.1", nodes[node].mx, timeout=30) as client:
            for i in range(PER_NODE):
                citizen = f"dan{node}.{i}@example.vn"
                client.sendmail(citizen, [INTAKE],
                                citizen_mail(node * 100 + i, f"Đơn {node}/{i}", sender=citizen))

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    total = 2 * PER_NODE
    assert wait_for(lambda: len(sink.messages) == total, timeout=60), len(sink.messages)
    subjects = [m.data.split(b"Subject: [", 1)[1].split(b"]", 1)[0].decode()
                for m in sink.messages]
    year = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).year  # Vietnam's year numbers them
    assert sorted(subjects) == [f"TD-{year}-{n:06d}" for n in range(1, total + 1)]
    # each node numbered some of them, and both list all of them
    listed = [json.loads(line) for line in
              nodes[1].cli("petitions", "list", "--json").stdout.splitlines()]
    assert sorted(c["number"] for c in listed) == sorted(subjects)


def test_a_subject_postgresql_cannot_store_still_opens_a_case(relay_factory, sink, pg_url):
    """A Subject that decodes to NUL: PostgreSQL refuses NUL in text, SQLite does not."""
    relay = relay_factory(
        server={"trusted_networks": ["127.0.0.0/8"]},
        outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
        directory={"url": pg_url}, archive={"blob_store": "database"},
        petitions={"enabled": True})
    data = citizen_mail(1, "x").replace(b"Subject: x", b"Subject: =?utf-8?q?=00?=", 1)
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=30) as client:
        client.sendmail("dan@example.vn", [INTAKE], data)
    assert wait_for(lambda: len(sink.messages) == 1, timeout=60)
    [case] = [json.loads(line) for line in
              relay.cli("petitions", "list", "--json").stdout.splitlines()]
    assert case["citizen"] == "dan@example.vn" and "\x00" not in case["subject"]


def test_many_connections_take_numbers_at_once(pg_url, tmp_path: Path):
    stores = [PetitionStore.open(petitions_config(tmp_path / f"n{n}", pg_url))
              for n in range(4)]
    start = threading.Barrier(len(stores))

    def file(n: int) -> list[str]:
        start.wait(10)
        out = []
        for i in range(25):
            msg = Incoming(mailbox=INTAKE, citizen=f"c{n}.{i}@example.vn", queue_id=f"q{n}.{i}",
                           subject="Đơn", message_id=f"<{n}.{i}@example.vn>", references=[],
                           auto="", at=datetime(2026, 7, 6, 3, tzinfo=UTC))
            filed = stores[n].receive(msg, "")
            assert filed.case is not None
            out.append(filed.case.number)
        return out

    with ThreadPoolExecutor(len(stores)) as pool:
        numbers = [n for part in pool.map(file, range(len(stores))) for n in part]
    for store in stores:
        store.close()
    assert sorted(numbers) == [f"TD-2026-{n:06d}" for n in range(1, 101)]
