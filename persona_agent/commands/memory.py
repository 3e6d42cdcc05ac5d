"""`persona-agent memory`: Export, import or delete everything stored about a user."""

from __future__ import annotations

import typer

app = typer.Typer(help="Export, import or delete everything stored about a user.", no_args_is_help=True)
