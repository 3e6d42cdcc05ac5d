"""`persona-agent bench`: accuracy, cost and latency benchmarks, as rich tables or JSON.

- ``bench accuracy --data FILE``: PersonalRewardBench-style pairwise accuracy per user.
- ``bench cost``: LLM calls and tokens per fit and per chat turn, on an instant counting fake.
- ``bench latency``: the chat graph's per-turn overhead outside the model, by node.

BENCHMARKS.md gives each suite's exact command, machine and figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.table import Table

from persona_agent.settings import DEFAULT_CHECKPOINT_DURABILITY, CheckpointDurability

app = typer.Typer(help="Benchmarks: accuracy, cost, latency.", no_args_is_help=True)

DEFAULT_MT_BENCH = Path("../shared/data/mt_bench_human/pairs.jsonl")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _judge_names(values: list[str] | None) -> tuple[str, ...]:
    from persona_agent.benchmarks.accuracy import JUDGES

    if not values:
        return JUDGES
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(JUDGES))
    if unknown:
        raise typer.BadParameter(f"unknown judges {unknown}; choose from {', '.join(JUDGES)}")
    return tuple(dict.fromkeys(names))


def _compared(value: str | None, names: tuple[str, ...]) -> tuple[str, str] | None:
    if value is None:
        return None
    parts = [name.strip() for name in value.split(",")]
    if len(parts) != 2 or parts[0] == parts[1] or any(name not in names for name in parts):
        raise typer.BadParameter(
            f"--compare takes two different judges among those run ({', '.join(names)}), got {value!r}"
        )
    return parts[0], parts[1]


def _emit(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


@app.command()
def accuracy(
    data: Annotated[Path, typer.Option("--data", exists=True, dir_okay=False, help="Pairs in JSONL.")],
    judge: Annotated[
        list[str] | None,
        typer.Option("--judge", help="Judge name; repeat or give a comma list (default: all)."),
    ] = None,
    users: Annotated[int | None, typer.Option("--users", min=1, help="Only the first N users.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of splits, reply orders and the CI.")] = 0,
    search: Annotated[
        str,
        typer.Option(
            "--search",
            help="default: the product's budgeted fit; full: the fuller search; reference: the "
            "reference library's search (12 + 13 candidate programs, no call cap).",
        ),
    ] = "default",
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Chat model name at the endpoint.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Key of the endpoint.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Judge model name.")] = None,
    cache_dir: Annotated[
        Path, typer.Option("--cache-dir", help="Where LLM results and embeddings are cached.")
    ] = Path(".bench-cache"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Cache nothing on disk.")] = False,
    compare: Annotated[
        str | None,
        typer.Option("--compare", help="A,B: judge A minus judge B on the same users, paired 95% CI."),
    ] = None,
    no_shared_tastes: Annotated[
        bool,
        typer.Option(
            "--no-shared-tastes",
            help="Fit each offline judge with the prior's own taste masses, not those the file's "
            "other users share.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit per user on train (+ val), judge the test pairs in both orders; macro accuracies with 95% CI."""
    from persona_agent.benchmarks.accuracy import AccuracyRequest, run_accuracy
    from persona_agent.settings import load_settings

    if search not in ("default", "full", "reference"):
        raise typer.BadParameter("--search must be default, full or reference")
    overrides = {
        key: value
        for key, value in {
            "openai_base_url": base_url,
            "model": model,
            "openai_api_key": api_key,
            "judge_model": judge_model,
        }.items()
        if value is not None
    }
    names = _judge_names(judge)
    settings = load_settings(**overrides)
    request = AccuracyRequest(
        data=data,
        judges=names,
        users=users,
        seed=seed,
        search=search,  # type: ignore[arg-type]
        cache_dir=None if no_cache else cache_dir,
        compare=_compared(compare, names),
        shared_tastes=not no_shared_tastes,
    )
    progress = Console(stderr=True)
    document = run_accuracy(request, settings, on_progress=lambda line: progress.print(f"[dim]{line}[/dim]"))
    if as_json:
        _emit(document)
        return
    print_accuracy(document, Console())


def _with_interval(value: float | None, interval: Sequence[float | None] | None) -> str:
    if value is None:
        return "n/a"
    low, high = interval or (None, None)
    return _pct(value) if low is None or high is None else f"{value:.1%} ({low:.0%}-{high:.0%})"


def print_accuracy(document: dict[str, Any], console: Console) -> None:
    """Print the macro table, the paired comparison, then the per-user table."""
    title = f"Pairwise accuracy on {document['data']}, both orders (search: {document['search']})"
    if document["model_note"]:
        title += f"\n[yellow]{document['model_note']}[/yellow]"
    table = Table(
        title=title,
        caption="debiased: both orders combined; per order: each order alone, ties wrong (95% CI)",
    )
    columns = ("judge", "debiased", "per order", "consistent", "users", "pairs", "skipped", "s")
    for column in columns:
        table.add_column(column, justify="left" if column == "judge" else "right")
    for name, row in document["judges"].items():
        table.add_row(
            name,
            _with_interval(row["macro_accuracy"], (row["ci_low"], row["ci_high"])),
            _with_interval(row["macro_accuracy_per_order"], row["ci_per_order"]),
            _pct(row["position_consistency"]),
            str(row["n_users"]),
            str(row["n_pairs"]),
            str(len(row["skipped"])),
            f"{row['seconds']:.1f}",
        )
    console.print(table)
    comparison = document.get("comparison")
    if comparison:
        for metric, label in (("accuracy", "debiased"), ("accuracy_per_order", "per order")):
            figure = comparison[metric]
            if figure is None:
                console.print(f"{comparison['a']} - {comparison['b']} ({label}): no common users")
                continue
            console.print(
                f"{comparison['a']} - {comparison['b']} ({label}): {figure['difference']:+.1%} "
                f"(paired 95% CI {figure['ci95'][0]:+.1%} to {figure['ci95'][1]:+.1%}) "
                f"over {comparison['n_users']} users"
            )
    for row in document["excluded_users"]:
        failed = "; ".join(f"{name}: {why}" for name, why in row["failed_judges"].items())
        console.print(f"[yellow]{row['user_id']} left out of every judge's figures ({failed})[/yellow]")
    per_user = Table(title="Per user (debiased / per order)")
    per_user.add_column("user")
    per_user.add_column("train/val/test", justify="right")
    names = list(document["judges"])
    for name in names:
        per_user.add_column(name, justify="right")
    per_user.add_column("fit calls", justify="right")
    by_judge = {
        name: {row["user_id"]: row for row in judge["users"]} for name, judge in document["judges"].items()
    }

    def cell(name: str, user: str) -> str:
        row = by_judge[name].get(user)
        return "" if row is None else f"{row['accuracy']:.0%} / {row['accuracy_per_order']:.0%}"

    for row in document["users"]:
        fit = row.get("fit")
        per_user.add_row(
            row["user_id"],
            f"{row['n_train']}/{row['n_val']}/{row['n_test']}",
            *(cell(name, row["user_id"]) for name in names),
            str(fit["calls"]) if fit else "",
        )
    console.print(per_user)
    llm = document["llm"]
    if document["model"]:
        console.print(
            f"model: {document['model']}; fit calls {llm['fit_calls']}, test calls "
            f"{sum(llm['test_calls'].values())}; cache {llm['cache'] or 'off'} "
            f"({llm['cache_hits']} hits, {llm['cache_misses']} misses)"
        )
    if document["offline_prior"]:
        console.print(f"offline prior: {document['offline_prior']}")
    console.print(f"{len(document['skipped_users'])} users skipped; {document['seconds']:.1f}s")


@app.command()
def cost(
    data: Annotated[
        Path, typer.Option("--data", help="MT-Bench pairs; synthetic pairs when the file is absent.")
    ] = DEFAULT_MT_BENCH,
    p: Annotated[
        float, typer.Option("--p", min=0.0, max=1.0, help="Chance the fake judge names the real choice.")
    ] = 0.6,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fake's verdicts and the pair draw.")] = 0,
    wall_embedded: Annotated[
        bool, typer.Option("--wall-embedded", help="Also time one 10 + 5 fit with the embedded model.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count LLM calls and tokens per fit (5/10/15/25 train pairs) and per chat turn (2/4/8 candidates)."""
    import asyncio

    from persona_agent.benchmarks.cost import load_cost_pairs, run_cost, time_embedded_fit
    from persona_agent.settings import load_settings

    settings = load_settings()
    source = load_cost_pairs(data, seed=seed)
    document = run_cost(
        source,
        p=p,
        seed=seed,
        max_calls=settings.max_calls_per_synthesis,
        max_pairs=settings.max_pairs_per_synthesis,
        demo_k=settings.demo_k,
    )
    if wall_embedded:
        from persona_agent.factory import build_chat_model, build_judge_model

        chat_model, judge_model = build_chat_model(settings), build_judge_model(settings)
        document["wall_embedded"] = {
            "model": settings.model_label,
            **asyncio.run(time_embedded_fit(settings, chat_model, judge_model, source.pairs, seed=seed)),
        }
    if as_json:
        _emit(document)
        return
    print_cost(document, Console())


def _range(low: int, high: int) -> str:
    return f"{low:,}-{high:,}"


def print_cost(document: dict[str, Any], console: Console) -> None:
    """Print the fit table beside the reference, the turn table and the targets."""
    table = Table(title=f"LLM cost per fit ({document['model']}; pairs: {document['pairs']})")
    for column in (
        "train + val",
        "used",
        "calls",
        "reference calls",
        "prompt tokens",
        "reference prompt tokens",
        "ratio (tokens)",
        "completion tokens",
        "by stage (calls)",
    ):
        table.add_column(column, justify="right")
    for n_train, row in document["fit"].items():
        reference = document["reference"].get(n_train)
        ratio = ""
        if reference:
            low, high = reference["prompt_tokens"]
            ratio = f"1/{low / row['prompt_tokens']:.0f} to 1/{high / row['prompt_tokens']:.0f}"
        table.add_row(
            f"{row['n_train']} + {row['n_val']}",
            f"{row['n_train_used']} + {row['n_val_used']}",
            str(row["calls"]),
            _range(*reference["calls"]) if reference else "",
            f"{row['prompt_tokens']:,}",
            _range(*reference["prompt_tokens"]) if reference else "",
            ratio,
            f"{row['completion_tokens']:,}",
            ", ".join(f"{stage} {usage['calls']}" for stage, usage in row["by_stage"].items()),
        )
    console.print(table)
    default = document["fit"].get("10")
    for search in ("full", "reference"):
        other = (document.get(f"fit_{search}_search") or {}).get("10")
        if not other:
            continue
        versus = f" (default: {default['calls']} calls, {default['prompt_tokens']:,})" if default else ""
        console.print(
            f"{search} search (--search {search}), 10 + 5: {other['calls']} calls, "
            f"{other['prompt_tokens']:,} prompt tokens, {other['candidate_sets']} candidate demo sets{versus}"
        )
    turns = Table(title="LLM cost per chat turn (PersonaJudge.rank, persona + demos)")
    for column in ("candidates", "judge calls", "prompt tokens", "completion tokens"):
        turns.add_column(column, justify="right")
    for count, row in document["turn"].items():
        turns.add_row(count, str(row["calls"]), f"{row['prompt_tokens']:,}", f"{row['completion_tokens']:,}")
    console.print(turns)
    targets = document["targets"]
    console.print(
        f"targets at 10 + 5: <= {targets['calls_at_10']} calls and <= {targets['prompt_tokens_at_10']:,} "
        f"prompt tokens: {'met' if targets['met'] else 'NOT met'}"
    )
    if "wall_embedded" in document:
        wall = document["wall_embedded"]
        console.print(
            f"one 10 + 5 fit with {wall['model']}: {wall['seconds']}s, {wall['calls']} calls, "
            f"{wall['prompt_tokens']:,} prompt tokens"
        )


@app.command()
def latency(
    data: Annotated[
        Path, typer.Option("--data", help="Pairs to store and ask about; synthetic when absent.")
    ] = DEFAULT_MT_BENCH,
    turns: Annotated[int, typer.Option("--turns", min=1, help="Measured chat turns.")] = 200,
    stored_pairs: Annotated[int, typer.Option("--pairs", min=1, help="Stored pairs per user.")] = 100,
    candidates: Annotated[int, typer.Option("--candidates", min=1, max=8, help="Candidates per turn.")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    checkpointer: Annotated[
        str,
        typer.Option(
            "--checkpointer",
            help="sqlite (the product's: WAL, synchronous=NORMAL), sqlite-full (synchronous=FULL) "
            "or memory (InMemorySaver).",
        ),
    ] = "sqlite",
    durability: Annotated[
        str,
        typer.Option(
            "--durability",
            help="When checkpoints are written (LangGraph durability): exit (the product's: once, "
            "when the turn ends), async or sync (after every step).",
        ),
    ] = DEFAULT_CHECKPOINT_DURABILITY,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time chat turns through the graph with instant fake models: p50/p95 per turn and per node."""
    import asyncio

    from persona_agent.benchmarks.latency import run_latency_async

    if checkpointer not in ("sqlite", "sqlite-full", "memory"):
        raise typer.BadParameter("--checkpointer must be sqlite, sqlite-full or memory")
    modes = get_args(CheckpointDurability)
    if durability not in modes:
        raise typer.BadParameter(f"--durability must be {', '.join(modes[:-1])} or {modes[-1]}")
    document = asyncio.run(
        run_latency_async(
            data=data,
            turns=turns,
            stored_pairs=stored_pairs,
            candidates=candidates,
            seed=seed,
            checkpointer=checkpointer,  # type: ignore[arg-type]  # checked above
            durability=durability,  # type: ignore[arg-type]  # checked above
        )
    )
    if as_json:
        _emit(document)
        return
    print_latency(document, Console())


def print_latency(document: dict[str, Any], console: Console) -> None:
    """Print the per-turn and per-node latency table."""
    table = Table(
        title=(
            f"Chat turn overhead outside the model: {document['turns']} turns, {document['candidates']} "
            f"candidates, {document['stored_pairs_per_user']} stored pairs per user ({document['model']})"
        )
    )
    for column in ("part", "p50 ms", "p95 ms", "mean ms", "max ms"):
        table.add_column(column, justify="left" if column == "part" else "right")
    rows = [("whole turn", document["turn"]), *document["nodes"].items()]
    for name, row in rows:
        table.add_row(
            name,
            f"{row['p50_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
            f"{row['mean_ms']:.1f}",
            f"{row['max_ms']:.1f}",
        )
    console.print(table)
    verdict = "met" if document["target_met"] else "NOT met"
    console.print(
        f"target p95 <= {document['target_p95_ms']:.0f} ms: {verdict}; judge "
        f"{', '.join(document['judges'])}, "
        f"{document['judge_calls_per_turn']} judge calls per turn; checkpoints {document['checkpointer']}, "
        f"durability {document['durability']}; setup {document['setup_seconds']}s"
    )
