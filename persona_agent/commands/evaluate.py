"""`persona-agent eval`: fit a persona per user and score the persona judge on held-out pairs.

Splits: a pair's own ``split`` (train / val / test) is used when the file gives one; users whose
pairs are all ``population`` are skipped. Without split labels, each user's pairs are shuffled
with the seed and cut into test = max(1, round(0.3 n)), val = round(0.2 n) when at least 4 pairs
remain for train and val together (else none), and train = the rest; users with fewer than 3
pairs are skipped. Accuracy counts both reply orders with ties wrong (the judge combines both
orders, so each pair scores 0 or 1 unless a comparison failed), macro-averaged over users with
a 95% bootstrap interval.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from langchain_core.language_models import BaseChatModel
from rich.console import Console
from rich.table import Table

from agent.evaluation import PairOutcome, judge_pair, summarize
from agent.formats import read_pairs, split_of
from agent.judge import PersonaJudge
from agent.records import PreferencePair
from agent.synthesis import SynthesizeMe
from agent.usage import UsageTracker

MIN_PAIRS = 3


def split_user_pairs(
    pairs: Sequence[PreferencePair], *, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair], list[PreferencePair], str]:
    """Return (train, val, test, how) for one user's pairs, following the module's split rule."""
    labelled = [pair for pair in pairs if split_of(pair) in ("train", "val", "test")]
    if labelled:
        parts = {name: [p for p in labelled if split_of(p) == name] for name in ("train", "val", "test")}
        return parts["train"], parts["val"], parts["test"], "the file's split"
    shuffled = sorted(pairs, key=lambda pair: pair.id)
    random.Random(seed).shuffle(shuffled)
    n_test = max(1, round(0.3 * len(shuffled)))
    rest = len(shuffled) - n_test
    n_val = round(0.2 * len(shuffled)) if rest >= 4 else 0
    test, val, train = shuffled[:n_test], shuffled[n_test : n_test + n_val], shuffled[n_test + n_val :]
    return train, val, test, f"seeded split {len(train)}/{len(val)}/{len(test)}"


def reference_personas(data: Path) -> dict[str, str]:
    """Read ``personas.jsonl`` beside the data file, when there is one."""
    path = data.parent / "personas.jsonl"
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if isinstance(record.get("user_id"), str) and isinstance(record.get("reference_persona"), str):
                found[record["user_id"]] = record["reference_persona"]
    return found


async def evaluate_users(
    by_user: dict[str, list[PreferencePair]],
    *,
    model: BaseChatModel,
    judge_model: BaseChatModel,
    fitter: SynthesizeMe,
    structured_method: str,
    concurrency: int,
    seed: int,
) -> tuple[list[dict[str, Any]], list[PairOutcome]]:
    """Fit and test each user in turn; return one row per user and every test outcome."""
    rows: list[dict[str, Any]] = []
    outcomes: list[PairOutcome] = []
    for user, pairs in by_user.items():
        train, val, test, how = split_user_pairs(pairs, seed=seed)
        if len(train) < 2 or not test:
            rows.append({"user_id": user, "skipped": f"too few pairs ({how})"})
            continue
        result = await fitter.fit(train, val)
        tracker = UsageTracker()
        judge = PersonaJudge(
            judge_model,
            result.persona.text,
            result.demos,
            structured_method=structured_method,
            concurrency=concurrency,
            stage="test",
            callbacks=[tracker],
        )
        # The judge's own concurrency limit gates the model calls.
        user_outcomes = await asyncio.gather(*(judge_pair(judge, pair) for pair in test))
        outcomes.extend(user_outcomes)
        fit_usage, test_usage = result.usage.total, tracker.report().total
        rows.append(
            {
                "user_id": user,
                "split": how,
                "n_train": len(result.train_pair_ids),
                "n_val": len(result.val_pair_ids),
                "n_test": len(test),
                "accuracy": sum(o.score for o in user_outcomes) / len(user_outcomes),
                "val_accuracy": result.persona.val_accuracy,
                "demos": len(result.demos),
                "verified_reasoning": sum(r.verified for r in result.reasoning),
                "skipped_pairs": len(result.skipped_pair_ids),
                "fallbacks": result.judge_fallbacks + judge.fallbacks,
                "fit_calls": fit_usage.calls,
                "fit_prompt_tokens": fit_usage.prompt_tokens,
                "fit_completion_tokens": fit_usage.completion_tokens,
                "test_calls": test_usage.calls,
                "persona": result.persona.text,
                "usage_by_stage": {k: v.model_dump() for k, v in result.usage.stages.items()},
            }
        )
    return rows, outcomes


def evaluate(
    data: Annotated[Path, typer.Option("--data", exists=True, dir_okay=False, help="Pairs in JSONL.")],
    users: Annotated[
        int | None, typer.Option("--users", min=1, help="Evaluate only the first N users.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of reply orders and splits.")] = 0,
) -> None:
    """Fit a persona per user and report the persona judge's accuracy on that user's test pairs."""
    from persona_agent.factory import build_chat_model, build_judge_model, build_synthesize_me
    from persona_agent.settings import load_settings

    settings = load_settings()
    pairs = read_pairs(data, skip_invalid=True, limits=settings.limits)
    by_user: dict[str, list[PreferencePair]] = defaultdict(list)
    for pair in pairs:
        if split_of(pair) != "population":
            by_user[pair.user_id].append(pair)
    chosen_users = dict(list(by_user.items())[:users] if users else by_user.items())
    model, judge_model = build_chat_model(settings), build_judge_model(settings)
    fitter = build_synthesize_me(settings, model, judge_model, seed=seed)
    rows, outcomes = asyncio.run(
        evaluate_users(
            chosen_users,
            model=model,
            judge_model=judge_model,
            fitter=fitter,
            structured_method=settings.structured_output_method,
            concurrency=settings.concurrency,
            seed=seed,
        )
    )
    report = summarize(outcomes, seed=seed) if outcomes else None
    references = reference_personas(data)
    note = (
        None
        if settings.uses_endpoint
        else "embedded 135M model: these figures check the pipeline, they do not measure the method"
    )
    document = {
        "data": str(data),
        "model": settings.model_label,
        "note": note,
        "macro_accuracy": report.macro_accuracy if report else None,
        "ci95": [report.ci_low, report.ci_high] if report else None,
        "n_users": report.n_users if report else 0,
        "n_test_pairs": report.n_pairs if report else 0,
        "llm_calls": sum(row.get("fit_calls", 0) + row.get("test_calls", 0) for row in rows),
        "users": [{**row, "reference_persona": references.get(row["user_id"])} for row in rows],
    }
    if as_json:
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    _print_report(document)


def _print_report(document: dict[str, Any]) -> None:
    console = Console()
    if document["note"]:
        console.print(f"[yellow]{document['note']}[/yellow]")
    for row in document["users"]:
        if "skipped" in row:
            console.print(f"[dim]{row['user_id']}: skipped, {row['skipped']}[/dim]")
            continue
        table = Table(title=f"{row['user_id']} ({row['split']})", show_lines=True, expand=True)
        table.add_column("synthesized persona")
        if row["reference_persona"]:
            table.add_column("reference persona")
            table.add_row(row["persona"], row["reference_persona"])
        else:
            table.add_row(row["persona"])
        console.print(table)
        val = "n/a" if row["val_accuracy"] is None else f"{row['val_accuracy']:.1%}"
        console.print(
            f"  test accuracy {row['accuracy']:.1%} on {row['n_test']} pairs | val {val} | "
            f"demos {row['demos']} | verified reasoning {row['verified_reasoning']}/{row['n_train']} | "
            f"fallbacks {row['fallbacks']} | fit {row['fit_calls']} calls, "
            f"{row['fit_prompt_tokens']} prompt + {row['fit_completion_tokens']} completion tokens | "
            f"test {row['test_calls']} calls"
        )
    if document["macro_accuracy"] is None:
        console.print("no user had enough pairs to evaluate")
        return
    low, high = document["ci95"]
    console.print(
        f"[bold]macro accuracy {document['macro_accuracy']:.1%} (95% CI {low:.1%} to {high:.1%}) over "
        f"{document['n_users']} users, {document['n_test_pairs']} test pairs; "
        f"{document['llm_calls']} LLM calls[/bold]"
    )
