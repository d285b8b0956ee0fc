"""`relay directory sync`: read the feed, print the plan, apply it (or not), report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from directory_sync.feed import FeedError, FeedProblem, read_source
from directory_sync.plan import Step, execute, plan
from relay.cli.common import is_interactive, print_json, printable
from relay.config import Config
from relay.directory.admin import Directory

SYMBOL = {"agency.add": "+", "hire": "+", "mailbox.add": "+", "agency.close": "-",
          "retire": "-", "depart": "-"}


def run_sync(config: Config, source: str, *, dry_run: bool, as_json: bool,
             bind_dn: str | None, bind_password_file: str | None, actor: str) -> None:
    """Exit 0 when done (or nothing to do), 1 when the feed has problems (nothing applied)."""
    password = (Path(bind_password_file).read_text().strip()
                if bind_password_file else None)
    directory = Directory(config)
    try:
        try:
            steps = plan(directory, read_source(source, bind_dn, password))
        except FeedError as exc:
            _fail(exc.problems, [], as_json, dry_run)
            return
        if not as_json:
            _print_plan(steps, dry_run)
        problems = _execute(directory, steps, actor, dry_run, as_json)
        if problems:
            _fail(problems, steps, as_json, dry_run)
            return
        if as_json:
            print_json({"source": source, "dry_run": dry_run, "applied": not dry_run
                        and bool(steps), "steps": [s.as_dict() for s in steps],
                        "problems": []})
        elif not steps:
            click.echo("The directory already matches the feed: nothing to do.")
        elif dry_run:
            click.echo(f"Dry run: {len(steps)} changes checked, none applied.")
        else:
            click.echo(f"Applied {len(steps)} changes in one transaction.")
    finally:
        directory.close()


def _execute(directory: Directory, steps: list[Step], actor: str, dry_run: bool,
             as_json: bool) -> list[FeedProblem]:
    if not steps:
        return []
    if not is_interactive(as_json):
        return execute(directory, steps, actor, commit=not dry_run)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("checking" if dry_run else "applying", total=len(steps))
        return execute(directory, steps, actor, commit=not dry_run,
                       progress=lambda _s: bar.advance(task))


def _print_plan(steps: list[Step], dry_run: bool) -> None:
    if steps:
        click.echo(f"Plan ({len(steps)} changes{', dry run' if dry_run else ''}):")
    for step in steps:
        click.echo(f"  {SYMBOL.get(step.action, '~')} {printable(step.summary)}  "
                   f"[{printable(step.basis)}; {printable(step.where)}]")


def _fail(problems: list[FeedProblem], steps: list[Step], as_json: bool, dry_run: bool,
          ) -> None:
    if as_json:
        print_json({"dry_run": dry_run, "applied": False, "steps": [s.as_dict() for s in steps],
                    "problems": [{"where": p.where, "message": p.message} for p in problems]})
    else:
        click.echo(f"The feed has {len(problems)} problem(s); nothing was applied:", err=True)
        for p in problems:
            click.echo(f"  {printable(p)}", err=True)
    sys.exit(1)
