"""Every `optical ...` command shown in README.md and docs/ parses: its subcommand exists,
its options exist and their values have the right types. (Running them needs data and
models; parsing catches docs that drifted from the code.)"""

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

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
                for span in re.findall(r"`(optical [^`]+)`", line):  # commands quoted in the prose
                    found.append((f"{doc.relative_to(REPO)}:{number}", span))
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
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", text):  # a shell line may chain commands
                part = re.sub(r"\s*[12]?>.*$", "", part)  # and redirect their output
                if part.startswith("optical "):
                    found.append((f"{doc.relative_to(REPO)}:{start}", part))
    return found


COMMANDS = shown_commands()


def parse(args: list[str]) -> str | None:
    """None when the CLI parses `args` down to the leaf command (its subcommand and every
    option exist, options that take a value have one), else the usage error. `--help` at
    the end stops it before it runs anything."""
    # --help goes right after the command names: every later token is still parsed (an unknown
    # option or a missing value fails), and a flag that lacks its value cannot swallow --help
    node, position = typer.main.get_command(app), 0
    while position < len(args) and args[position] in getattr(node, "commands", {}):
        node, position = node.commands[args[position]], position + 1
    if getattr(node, "commands", None) and position < len(args) and not args[position].startswith("-"):
        return f"no such command {args[position]!r}"
    result = CliRunner().invoke(app, [*args[:position], "--help", *args[position:]])
    if result.exit_code == 0:
        return None
    lines = [line.strip(" │╭╮╰╯─") for line in result.output.splitlines()]
    return " ".join(line for line in lines if line) or f"exit {result.exit_code}"


def test_the_docs_show_commands_and_parsing_catches_drift():
    assert len(COMMANDS) > 20
    for bad in (["distill", "--no-such-flag"], ["eval", "--index"], ["evaluate"], ["models", "fetch"]):
        assert parse(bad) is not None, bad


@pytest.mark.parametrize("where,line", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, line):
    args = shlex.split(line)[1:]
    if "--help" in args or "--version" in args:
        return
    problem = parse(args)
    assert problem is None, f"{where}: `{line}`: {problem}"
