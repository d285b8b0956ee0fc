"""Shared fixtures. Each real-server fixture lives in tests/fixtures/ and skips,
naming the missing program, where that program is not installed."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.relayproc",
    "tests.fixtures.sink",
    "tests.fixtures.clamd",
    "tests.fixtures.slapd",
    "tests.fixtures.dovecot",
    "tests.fixtures.postfix",
    "tests.fixtures.rspamd",
]
