"""`persona-agent eval`: fit a persona per user and score the persona judge on held-out pairs.

It runs the protocol of `agent.evaluation`: the split of `split_user_pairs` (a file's own
``split`` labels, else a seeded split of sibling groups: test 30%, val 20%, train the rest;
users whose pairs are all ``population`` are skipped), every test pair judged in both orders,
and two accuracies macro-averaged over users with 95% bootstrap intervals: debiased (the judge
combines both orders, as in chat) and per order (each order scored alone, ties wrong, as
PersonalRewardBench counts), with the judge's position consistency.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from langchain_core.language_models import BaseChatModel
from rich.console import Console
from rich.table import Table

from agent.evaluation import AccuracyReport, PairJudge, run_judges, same_judge
from agent.fit_stages import SynthesisResult
from agent.formats import read_pairs
from agent.judge import PersonaJudge
from agent.splits import UserSplit, user_splits
from agent.synthesis import SynthesizeMe
from agent.usage import UsageTracker


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
    splits: list[UserSplit],
    *,
    judge_model: BaseChatModel,
    fitter: SynthesizeMe,
    structured_method: str,
    concurrency: int,
    seed: int,
) -> tuple[list[dict[str, Any]], AccuracyReport | None]:
    """Fit and test each user in turn; return one row per user and the macro report."""
    fits: dict[str, SynthesisResult] = {}
    judges: dict[str, PersonaJudge] = {}
    trackers: dict[str, UsageTracker] = {}

    async def persona_judge(split: UserSplit) -> PairJudge:
        result = fits[split.user_id] = await fitter.fit(split.train, split.val)
        trackers[split.user_id] = UsageTracker()
        judges[split.user_id] = PersonaJudge(
            judge_model,
            result.persona.text,
            result.demos,
            structured_method=structured_method,
            concurrency=concurrency,
            stage="test",
            callbacks=[trackers[split.user_id]],
        )
        return same_judge(judges[split.user_id])

    evaluation = await run_judges(splits, {"synthesizeme": persona_judge})
    report = evaluation.report("synthesizeme", seed=seed)
    per_user = {row.user_id: row for row in report.users} if report else {}
    rows: list[dict[str, Any]] = []
    for split in splits:
        failed = evaluation.runs["synthesizeme"].skipped.get(split.user_id)
        if failed is not None:
            rows.append({"user_id": split.user_id, "skipped": f"fit failed: {failed}"})
            continue
        result, scores = fits[split.user_id], per_user[split.user_id]
        fit_usage, test_usage = result.usage.total, trackers[split.user_id].report().total
        rows.append(
            {
                "user_id": split.user_id,
                "split": split.how,
                "n_train": len(result.train_pair_ids),
                "n_val": len(result.val_pair_ids),
                "n_test": len(split.test),
                "accuracy": scores.accuracy,
                "accuracy_per_order": scores.accuracy_per_order,
                "position_consistency": scores.position_consistency,
                "val_accuracy": result.persona.val_accuracy,
                "demos": len(result.demos),
                "verified_reasoning": sum(r.verified for r in result.reasoning),
                "skipped_pairs": len(result.skipped_pair_ids),
                "fallbacks": result.judge_fallbacks + judges[split.user_id].fallbacks,
                "fit_calls": fit_usage.calls,
                "fit_prompt_tokens": fit_usage.prompt_tokens,
                "fit_completion_tokens": fit_usage.completion_tokens,
                "test_calls": test_usage.calls,
                "persona": result.persona.text,
                "usage_by_stage": {k: v.model_dump() for k, v in result.usage.stages.items()},
            }
        )
    return rows, report


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
    splits, too_few = user_splits(pairs, users=users, seed=seed)
    model, judge_model = build_chat_model(settings), build_judge_model(settings)
    fitter = build_synthesize_me(settings, model, judge_model, seed=seed)
    rows, report = asyncio.run(
        evaluate_users(
            splits,
            judge_model=judge_model,
            fitter=fitter,
            structured_method=settings.structured_output_method,
            concurrency=settings.concurrency,
            seed=seed,
        )
    )
    rows += [{"user_id": user, "skipped": why} for user, why in too_few.items()]
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
        "macro_accuracy_per_order": report.macro_accuracy_per_order if report else None,
        "ci95_per_order": [report.ci_per_order_low, report.ci_per_order_high] if report else None,
        "position_consistency": report.position_consistency if report else None,
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
            f"  test accuracy {row['accuracy']:.1%} debiased, {row['accuracy_per_order']:.1%} per order, "
            f"{row['position_consistency']:.0%} position-consistent, on {row['n_test']} pairs | val {val} | "
            f"demos {row['demos']} | verified reasoning {row['verified_reasoning']}/{row['n_train']} | "
            f"fallbacks {row['fallbacks']} | fit {row['fit_calls']} calls, "
            f"{row['fit_prompt_tokens']} prompt + {row['fit_completion_tokens']} completion tokens | "
            f"test {row['test_calls']} calls"
        )
    if document["macro_accuracy"] is None:
        console.print("no user had enough pairs to evaluate")
        return
    low, high = document["ci95"]
    order_low, order_high = document["ci95_per_order"]
    console.print(
        f"[bold]macro accuracy {document['macro_accuracy']:.1%} debiased (95% CI {low:.1%} to {high:.1%}), "
        f"{document['macro_accuracy_per_order']:.1%} per order (95% CI {order_low:.1%} to {order_high:.1%}), "
        f"position consistency {document['position_consistency']:.1%}; over {document['n_users']} users, "
        f"{document['n_test_pairs']} test pairs; {document['llm_calls']} LLM calls[/bold]"
    )
