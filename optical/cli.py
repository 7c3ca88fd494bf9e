"""The `optical` command line: each command parses options and calls the library."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer

from optical.errors import OpticalError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill English retrieval teachers into multilingual students; evaluate them.")
models_app = typer.Typer(no_args_is_help=True, help="Packaged offline models.")
recipes_app = typer.Typer(no_args_is_help=True, help="Ready recipes per language and task.")
app.add_typer(models_app, name="models")
app.add_typer(recipes_app, name="recipes")


def fail(message: str) -> None:
    """Print one line to stderr and exit 2: the only way user errors leave the CLI."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def handles_errors(fn):
    """Turn an OpticalError raised inside a command into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OpticalError as err:
            fail(str(err))

    return wrapper


def main() -> None:
    try:
        app(standalone_mode=True)
    except OpticalError as err:  # raised outside a command body (rare)
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
