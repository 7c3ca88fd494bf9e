"""Every `optical ...` command shown in README.md and docs/ parses: its subcommand exists,
its options exist and their values have the right types. (Running them needs data and
models; parsing catches docs that drifted from the code.)"""

import re
import shlex
from pathlib import Path

import click
import pytest
import typer

from optical.cli import app

REPO = Path(__file__).parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def shown_commands() -> list[tuple[str, str]]:
    """(where, command line) for every line of a fenced block that starts with `optical `,
    continuation lines joined, trailing comments dropped."""
    found = []
    for doc in DOCS:
        in_block, pending, start = False, "", 0
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block, pending = not in_block, ""
                continue
            if not in_block:
                continue
            text = pending + line.strip()
            if not pending:
                start = number
                text = re.sub(r"^(\$ |\.venv/bin/)", "", text)
                if not text.startswith("optical "):
                    continue
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            text = re.sub(r"\s+#.*$", "", text)
            found.append((f"{doc.relative_to(REPO)}:{start}", text))
    return found


COMMANDS = shown_commands()


def parse(args: list[str]) -> None:
    """Parse like the CLI would, down to the leaf command, without running it."""
    command: click.Command = typer.main.get_command(app)
    ctx = command.make_context("optical", list(args), resilient_parsing=False)
    while isinstance(command, click.Group):
        rest = [*ctx.protected_args, *ctx.args]
        if not rest:
            return
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)


def test_the_docs_show_commands_and_parsing_catches_drift():
    assert len(COMMANDS) > 20
    for bad in (["distill", "--no-such-flag"], ["eval", "--index"], ["grid"], ["evaluate"], ["eval", "--batch-size", "x"]):
        with pytest.raises(click.UsageError):
            parse(bad)


@pytest.mark.parametrize("where,line", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, line):
    args = shlex.split(line)[1:]
    if "--help" in args or "--version" in args:
        return
    try:
        parse(args)
    except click.UsageError as err:
        pytest.fail(f"{where}: `{line}`: {err.format_message()}")
