"""`persona-agent bench`: Benchmarks: accuracy, cost, latency, memory."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks: accuracy, cost, latency, memory.", no_args_is_help=True)
