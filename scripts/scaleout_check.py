"""Scale-out check: 1, 2 and 4 app processes serve the same users over one PostgreSQL and one Chroma server.

Starts a throwaway PostgreSQL cluster (`devtools.postgres`), a `chroma run`
server and the instant OpenAI-compatible stub (``python -m devtools.openai_stub``, a child process),
then for each count in ``--workers`` runs `persona_agent.benchmarks.scaleout.run_scaleout`:
that many worker processes of the chat graph, ``--users`` fresh users and ``--turns`` turns
(each user in two threads at once, consecutive turns on different processes, feedback on half
of them). Every run is checked (nothing lost, histories in order, persona versions increasing,
no overlapping syntheses of a user, vector copies current) and its throughput printed; the
ratio to the first count comes from the same invocation. Exits 1 when a check fails.

Run: ``python scripts/scaleout_check.py [--workers 1 2 4] [--users 20] [--turns 200]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from devtools.chroma_server import ChromaServer  # noqa: E402
from devtools.postgres import PostgresCluster  # noqa: E402
from persona_agent.benchmarks.scaleout import run_scaleout  # noqa: E402


def main() -> int:
    """Run the scale-out check for each worker count; print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--turns", type=int, default=200)
    arguments = parser.parse_args()
    if arguments.users < 1 or arguments.turns < 4 * arguments.users:
        parser.error("--turns must give every user at least 4 turns")

    stub = subprocess.Popen(
        [sys.executable, "-m", "devtools.openai_stub", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    runs = []
    try:
        assert stub.stdout is not None
        base_url = stub.stdout.readline().strip()  # the stub prints its base URL when it listens
        with (
            tempfile.TemporaryDirectory(prefix="scaleout-check-") as folder,
            PostgresCluster() as postgres,
            ChromaServer(Path(folder) / "chroma") as chroma,
        ):
            for workers in arguments.workers:
                report = run_scaleout(
                    workers=workers,
                    users=arguments.users,
                    turns=arguments.turns,
                    checkpoint_url=postgres.url,
                    chroma_server=chroma.address,
                    openai_base_url=base_url,
                    run_id=f"w{workers}",
                    folder=Path(folder) / f"run-w{workers}",
                )
                runs.append(report)
                print(json.dumps(report), file=sys.stderr, flush=True)
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    base = runs[0]["turns_per_s"]
    for report in runs:
        report["throughput_ratio"] = round(report["turns_per_s"] / base, 2)
    print(json.dumps({"runs": runs}, indent=2))
    return 1 if any(report["problems"] for report in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
