"""`persona-agent pairs`: Add, import, list and delete a user's preference pairs."""

from __future__ import annotations

import typer

app = typer.Typer(help="Add, import, list and delete a user's preference pairs.", no_args_is_help=True)
