"""`persona-agent serve`: run the graphs, the memory routes and the inspector with `langgraph dev`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def server_environment(base: dict[str, str], *, dev: bool) -> dict[str, str]:
    """Return the environment `langgraph dev` runs with: offline by default, dev auth when asked."""
    env = dict(base)
    env["LANGGRAPH_CLI_NO_ANALYTICS"] = "1"
    env["LANGGRAPH_NO_VERSION_CHECK"] = "1"
    env.setdefault("ANONYMIZED_TELEMETRY", "False")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not env.get("LANGSMITH_API_KEY") and not env.get("LANGCHAIN_API_KEY"):
        env["LANGSMITH_TRACING"] = "false"
        env["LANGCHAIN_TRACING_V2"] = "false"
    if dev:
        env["PERSONA_AGENT_AUTH"] = "dev"
    return env


def langgraph_command(
    *, host: str, port: int, config: Path, jobs: int = 10, allow_blocking: bool = False
) -> list[str]:
    """Return the `langgraph dev` command line for this project."""
    executable = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
    if executable is None:
        raise typer.BadParameter("the `langgraph` CLI is not installed (pip install 'langgraph-cli[inmem]')")
    command = [
        executable,
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        host,
        "--port",
        str(port),
        "--config",
        str(config),
        # langgraph dev runs one run at a time unless told otherwise.
        "--n-jobs-per-worker",
        str(jobs),
    ]
    if allow_blocking:
        command.append("--allow-blocking")
    return command


def serve(
    port: int = typer.Option(2024, min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; keep loopback unless tokens are set."),
    dev: bool = typer.Option(False, "--dev", help="Dev auth: 'Bearer dev-<user>' signs in as <user>."),
    jobs: int = typer.Option(10, min=1, max=256, help="Runs the server executes at once."),
    allow_blocking: bool = typer.Option(False, help="Let langgraph dev tolerate blocking calls."),
    state_dir: Annotated[
        Path, typer.Option(help="Where langgraph dev keeps its threads and runs (a .langgraph_api folder).")
    ] = REPO_ROOT,
) -> None:
    """Serve the chat and synthesis graphs, the memory routes and the inspector at /inspector."""
    from persona_agent.server.tokens import load_token_map
    from persona_agent.settings import load_settings

    env = server_environment(dict(os.environ), dev=dev)
    settings = load_settings(**({"auth": "dev"} if dev else {}))
    tokens = load_token_map(settings)  # a bad tokens file fails here, before the server starts
    if not tokens.configured:
        raise typer.BadParameter(
            "no bearer tokens configured: set PERSONA_AGENT_TOKENS_FILE (JSON {token: user_id}) or "
            "PERSONA_AGENT_TOKENS ('tok1=alice,tok2=bob'), or pass --dev on a loopback address"
        )
    if tokens.dev and host not in LOOPBACK:
        raise typer.BadParameter(f"dev auth lets anyone sign in as anyone: refusing to bind {host}")
    config = REPO_ROOT / "langgraph.json"
    typer.secho(
        f"serving on http://{host}:{port} — inspector at http://{host}:{port}/inspector"
        + (" (dev auth: use 'Bearer dev-<user>')" if tokens.dev else ""),
        err=True,
    )
    command = langgraph_command(host=host, port=port, config=config, jobs=jobs, allow_blocking=allow_blocking)
    # langgraph dev imports "server:..." from its working directory and PYTHONPATH, and writes
    # its thread store (.langgraph_api) into the working directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    state_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, cwd=state_dir, env=env)
    # Stopping this command (by its pid) stops the server too.
    signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate())
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        code = process.wait(timeout=30)
    raise typer.Exit(code)
