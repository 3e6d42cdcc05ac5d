"""`persona-agent persona`: Show a user's persona, its history, and roll back."""

from __future__ import annotations

import typer

app = typer.Typer(help="Show a user's persona, its history, and roll back.", no_args_is_help=True)
