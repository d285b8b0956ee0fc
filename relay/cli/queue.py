"""`relay queue`: list, show, flush, delete, hold, release."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
