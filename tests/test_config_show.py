"""`relay config show` (issue 14, item 5): the effective configuration like `postconf`,
policies' options included and validated by the policies themselves."""

from __future__ import annotations

import json
import tomllib

from tests.fixtures.relayproc import run_cli

CONFIG = """\
[server]
hostname = "mx.dienbien.gov.vn"
max_message_size = 10485760
idle_timeout = "2m"
metrics_bind = "127.0.0.1:9325"

[listeners.mx]
bind = "0.0.0.0:25"

[listeners.submission]
bind = "[::1]:587"
kind = "submission"

[milter]
socket_mode = "0640"

[policies.webmail]
mx_timeout = "5s"

[policies.webmail.actions]
"webmail.outbound" = "log"

[policies.headers]

[policies.attachments]
"""


def show(tmp_path, *args: str, text: str = CONFIG) -> tuple[int, str, str]:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    result = run_cli("config", "show", "-c", str(path), *args)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def as_dict(output: str) -> dict[str, str]:
    return dict(line.split(" = ", 1) for line in output.splitlines()
                if not line.startswith("#"))


def test_everything_in_force_with_policy_options(tmp_path):
    code, out, err = show(tmp_path)
    assert code == 0, err
    shown = as_dict(out)
    assert shown["server.hostname"] == '"mx.dienbien.gov.vn"'
    assert shown["server.idle_timeout"] == "120.0"  # durations resolved to seconds
    assert shown["server.max_recipients"] == "100"  # a default, filled in
    assert shown["listeners.submission.bind"] == '"[::1]:587"'
    assert shown["milter.socket_mode"] == '"0640"'
    assert shown["server.metrics_bind"] == '"127.0.0.1:9325"'
    # policies' own options, from their own models, in relay.toml order
    assert shown["policies.webmail.mx_timeout"] == "5.0"
    assert shown['policies.webmail.actions."webmail.outbound"'] == '"log"'
    assert shown['policies.webmail.actions."webmail.dns_error"'] == '"tempfail"'
    assert shown["policies.headers.require"] == '["From", "Date"]'
    assert "policies.attachments.action" in shown
    policies = [k.split(".")[1] for k in shown if k.startswith("policies.")]
    assert list(dict.fromkeys(policies)) == ["webmail", "headers", "attachments"]


def test_changed_is_a_relay_toml_that_means_the_same(tmp_path):
    code, out, _ = show(tmp_path, "--changed")
    assert code == 0
    assert "server.max_recipients" not in out  # left at its default
    assert 'server.hostname = "mx.dienbien.gov.vn"' in out
    # enabled with their options at the defaults, and in their place: the order matters
    assert out.index("policies.webmail.") < out.index("policies.headers = {}") \
        < out.index("policies.attachments = {}")
    again = tmp_path / "again"
    again.mkdir()
    (again / "relay.toml").write_text(out)
    tomllib.loads(out)  # valid TOML as it is
    full = run_cli("config", "show", "-c", str(tmp_path / "relay.toml"), "--json").stdout
    round_trip = run_cli("config", "show", "-c", str(again / "relay.toml"), "--json").stdout
    assert [json.loads(x)["key"] for x in full.splitlines()] == \
        [json.loads(x)["key"] for x in round_trip.splitlines()]
    assert full == round_trip


def test_defaults_like_postconf_d(tmp_path):
    code, out, _ = show(tmp_path, "--defaults", "server", "policies.webmail")
    assert code == 0
    shown = as_dict(out)
    assert shown["server.max_message_size"] == "26214400"  # not the file's 10485760
    assert shown["server.idle_timeout"] == "300.0"
    assert shown["policies.webmail.mx_timeout"] == "3.0"
    assert "# server.metrics_bind = (not set)" in out
    assert not any(k.startswith("listeners.") for k in shown)  # only the keys asked for


def test_a_default_policy_dropped_by_the_file_is_said(tmp_path):
    code, out, _ = show(tmp_path, "--changed", text='[policies.webmail]\n')
    assert code == 0
    assert out.splitlines()[0] == "policies.webmail = {}"
    assert "# policies.headers.action = \"reject\"  (default; not in this configuration)" in out


def test_json_lines_per_key(tmp_path):
    code, out, _ = show(tmp_path, "--json", "server.max_message_size", "server.max_recipients")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"key": "server.max_message_size", "value": 10485760, "default": 26214400,
         "changed": True},
        {"key": "server.max_recipients", "value": 100, "default": 100, "changed": False}]


def test_database_password_is_never_shown(tmp_path):
    code, out, _ = show(tmp_path, text='[directory]\nurl = "postgresql://relay:s3cr%40t@db/x"\n')
    assert code == 0
    assert 'directory.url = "postgresql://relay:***@db/x"' in out
    assert "s3cr" not in out


def test_typos_are_configuration_errors_naming_the_key(tmp_path):
    code, _, err = show(tmp_path, text='[policies.webmail.actions]\n"webmail.nosuch" = "log"\n')
    assert code == 78
    assert "policies.webmail.actions.webmail.nosuch: policy webmail has no finding code" in err
    code, _, err = show(tmp_path, text="[policies.webmail]\nmx_timeut = 3\n")
    assert code == 78 and "policies.webmail.mx_timeut: unknown key" in err
    code, _, err = show(tmp_path, text="[server]\nmax_mesage_size = 3\n")
    assert code == 78 and "server.max_mesage_size: unknown key" in err
    assert "Traceback" not in err
