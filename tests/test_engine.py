"""The engine through `relay test-message`: findings, actions, replies, plugins."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.relayproc import ROOT, run_cli, to_toml

GOOD = (b"From: an@dienbien.gov.vn\r\nTo: ubnd@dienbien.gov.vn\r\nSubject: Hello\r\n"
        b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\n\r\nbody\r\n")
NO_DATE = b"From: an@dienbien.gov.vn\r\nSubject: \r\n\r\nbody\r\n"


def run_test_message(tmp_path: Path, message: bytes, *args: str, config: dict | None = None):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml(config or {}))
    msg = tmp_path / "msg.eml"
    msg.write_bytes(message)
    result = run_cli("test-message", "-c", str(cfg), str(msg), "--json", *args)
    return result.returncode, json.loads(result.stdout)


def test_clean_message_is_accepted(tmp_path):
    code, out = run_test_message(tmp_path, GOOD, "--from", "a@example.org", "--to",
                             "ubnd@dienbien.gov.vn")
    assert code == 0
    assert out["action"] == "accept" and out["reply"].startswith("250 2.0.0")
    assert out["findings"] == []


def test_header_sanity_rejects_with_bilingual_reply_and_article(tmp_path):
    code, out = run_test_message(tmp_path, NO_DATE, "--from", "a@example.org", "--to",
                             "ubnd@dienbien.gov.vn")
    assert code == 1 and out["action"] == "reject"
    [finding] = out["findings"]
    assert finding["policy"] == "headers" and finding["code"] == "headers.missing"
    assert finding["article"] == "Điều 5.1" and finding["recipient"] is None
    assert "Thiếu trường tiêu đề Date:" in finding["message"]
    assert out["reply"].startswith("550-5.6.0 Thiếu trường tiêu đề Date: (Điều 5.1)")
    assert out["reply"].endswith("550 5.6.0 Missing header field Date: (Article 5.1)")


def test_log_action_is_monitor_only(tmp_path):
    config = {"policies": {"headers": {"action": "log"}}}
    code, out = run_test_message(tmp_path, NO_DATE, "--from", "a@example.org", "--to",
                             "ubnd@dienbien.gov.vn", config=config)
    assert code == 0 and out["action"] == "accept"
    assert out["findings"][0]["action"] == "log"
    assert out["added_headers"] == []


def test_tag_adds_a_header_to_the_delivered_message(tmp_path):
    config = {"policies": {"headers": {"action": "tag"}}}
    output = tmp_path / "out.eml"
    code, out = run_test_message(tmp_path, NO_DATE, "--from", "a@example.org", "--to",
                             "ubnd@dienbien.gov.vn", "--output", str(output), config=config)
    assert code == 0
    header = 'X-Relay-Finding: headers.missing; policy=headers; article="Article 5.1"'
    assert out["added_headers"] == [header]
    assert output.read_bytes().startswith(header.encode() + b"\r\n")
    assert output.read_bytes().endswith(NO_DATE)


def test_per_code_action_override(tmp_path):
    config = {"policies": {"headers": {"action": "reject",
                                       "actions": {"headers.missing": "log"}}}}
    code, out = run_test_message(tmp_path, NO_DATE, "--from", "a@example.org", "--to",
                             "ubnd@dienbien.gov.vn", config=config)
    assert code == 0 and out["findings"][0]["action"] == "log"


def test_recipient_findings_are_per_recipient(tmp_path):
    config = {"server": {"max_recipients": 1}}
    code, out = run_test_message(tmp_path, GOOD, "--from", "a@example.org", "--to",
                             "ubnd@dienbien.gov.vn", "--to", "tiepdan@dienbien.gov.vn",
                             config=config)
    assert out["accepted_recipients"] == ["ubnd@dienbien.gov.vn"]
    assert out["recipients"]["tiepdan@dienbien.gov.vn"].startswith("452-4.5.3")
    assert out["action"] == "accept"


def test_relay_denied_without_auth(tmp_path):
    code, out = run_test_message(tmp_path, GOOD, "--from", "a@example.org", "--to", "x@gmail.com")
    assert code == 1 and out["action"] == "reject"
    assert "554 5.7.1 Relay access denied" in out["reply"]


def test_a_new_policy_is_one_module_plus_one_table(tmp_path):
    config = {"server": {"policy_dirs": [str(ROOT / "tests" / "plugins")]},
              "policies": {"no_empty_subject": {"action": "reject", "min_length": 3}}}
    code, out = run_test_message(tmp_path, GOOD.replace(b"Hello", b"Hi"), "--from", "a@example.org",
                             "--to", "ubnd@dienbien.gov.vn", config=config)
    assert code == 1
    assert [f["code"] for f in out["findings"]] == ["subject.empty"]
    # its options are validated like any other policy's
    config["policies"]["no_empty_subject"]["min_lenght"] = 3
    cfg = tmp_path / "bad.toml"
    cfg.write_text(to_toml(config))
    result = run_cli("check-config", "-c", str(cfg))
    assert result.returncode == 78
    assert b"policies.no_empty_subject.min_lenght: unknown key" in result.stderr


def test_human_output_explains(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text("")
    msg = tmp_path / "m.eml"
    msg.write_bytes(NO_DATE)
    result = run_cli("test-message", "-c", str(cfg), "--from", "a@example.org", "--to",
                     "ubnd@dienbien.gov.vn", str(msg))
    text = result.stdout.decode()
    assert "Decision: REJECT" in text and "headers.missing" in text and "Điều 5.1" in text


def test_no_reply_line_passes_512_octets_whatever_it_quotes():
    """RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF, also when it
    quotes a client's very long address or file name, in UTF-8 or folded to ASCII."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from relay.model import Reply

    @settings(max_examples=300, deadline=None)
    @given(lines=st.lists(st.text(min_size=0, max_size=1500), min_size=1, max_size=3),
           utf8=st.booleans())
    def check(lines: list[str], utf8: bool) -> None:
        rendered = Reply(550, "5.1.1", tuple(lines)).render(utf8).split("\r\n")
        assert len(rendered) == len(lines)
        for i, line in enumerate(rendered):
            assert len((line + "\r\n").encode()) <= 512, len(line.encode())
            assert line.startswith("550 " if i == len(lines) - 1 else "550-")
            assert utf8 or line.isascii()

    check()
    long = Reply(550, "5.1.1", ("<" + "đ" * 400 + "@dienbien.gov.vn>: Không có hộp thư",))
    assert long.render(True).endswith("...") and long.render(False).startswith("550 5.1.1 <ddd")
