"""`persona-agent demo`: synthesize a persona for the bundled sample user and answer two questions.

The demo drives the same graphs as the chat and the server: the synthesis graph builds the
persona from the stored pairs, the chat graph drafts candidates and lets the judge pick.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import typer
from langchain_core.callbacks import BaseCallbackHandler
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

SAMPLE_USER_FILE = Path(__file__).resolve().parent.parent / "data" / "sample_user.jsonl"
SAMPLE_USER = "sample-user"
QUESTIONS = (
    "How do I keep my houseplants alive while I'm away for two weeks?",
    "What's a good way to learn a new programming language quickly?",
)
JUDGE_NAMES = {
    "persona": "the persona judge (LLM)",
    "default": "the default LLM judge",
    "offline": "the offline personal reward model",
}


class _CallProgress(BaseCallbackHandler):
    """Advance a progress bar each time a model call finishes."""

    run_inline = True

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress = progress
        self.task = task

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.progress.advance(self.task)


def demo(
    user: str = typer.Option(SAMPLE_USER, help="User id the sample pairs are stored under."),
    fresh: bool = typer.Option(True, help="Forget what an earlier demo stored for this user first."),
) -> None:
    """Learn the sample user's taste from their pairs, then answer two questions for them."""
    asyncio.run(_run_demo(user, fresh))


async def _run_demo(user_id: str, fresh: bool) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.memory import InMemorySaver

    from agent.evaluation import split_train_val
    from agent.formats import read_pairs
    from graphs.state import ChatContext, SynthesisContext
    from persona_agent.factory import (
        build_chat_graph,
        build_chat_model,
        build_judge_model,
        build_store,
        build_synthesis_graph,
        build_synthesizer,
    )
    from persona_agent.settings import load_settings

    console = Console()
    settings = load_settings()
    console.print(f"[bold]persona-agent demo[/] — model: {settings.model_label}")

    store = build_store(settings)
    if fresh and store.count_pairs(user_id):
        await asyncio.to_thread(store.delete_user, user_id)
    pairs = read_pairs(SAMPLE_USER_FILE, user_id=user_id, source="import", limits=settings.limits)
    added = await asyncio.to_thread(store.add_pairs, user_id, pairs)
    console.print(f"Stored {len(added)} preference pairs of the sample user '{user_id}'.")

    chat_model = build_chat_model(settings)
    judge_model = build_judge_model(settings)
    train, val = split_train_val(pairs)
    synthesizer = build_synthesizer(settings, chat_model, judge_model)
    train, val = synthesizer.trim(train, val)
    synthesis = build_synthesis_graph(settings, store=store, chat_model=chat_model, judge_model=judge_model)
    with Progress(
        TextColumn("Synthesizing persona"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("fit", total=synthesizer.plan_calls(len(train), len(val)))
        # Set on the models themselves: the fit passes its own callbacks (usage counting) to
        # every call, which would replace callbacks given in the run's config.
        models = {id(model): model for model in (chat_model, judge_model)}.values()
        for model in models:
            model.callbacks = [_CallProgress(progress, task)]
        try:
            state = await synthesis.ainvoke({}, context=SynthesisContext(user_id=user_id))
        finally:
            for model in models:
                model.callbacks = None
    outcome = state["outcome"]
    persona = store.current_persona(user_id)
    if persona is None:
        console.print(f"[red]No persona was made ({outcome['status']}): {outcome['detail']}[/]")
        raise typer.Exit(1)
    accuracy = "n/a" if persona.val_accuracy is None else f"{persona.val_accuracy:.0%}"
    console.print(
        Panel(
            persona.text,
            title=f"Persona v{persona.version} of {user_id}",
            subtitle=f"{outcome['llm_calls']} LLM calls · {len(persona.demo_pair_ids)} demos · "
            f"held-out accuracy {accuracy}",
        )
    )

    chat = build_chat_graph(
        settings, store=store, checkpointer=InMemorySaver(), chat_model=chat_model, judge_model=judge_model
    )
    for question in QUESTIONS:
        console.rule(f"[bold]{question}")
        config: RunnableConfig = {"configurable": {"thread_id": str(uuid4())}}
        with console.status("Drafting candidates and judging them..."):
            turn = await chat.ainvoke(
                {"messages": [HumanMessage(question)]},
                config=config,
                context=ChatContext(user_id=user_id),
            )
        ranking = turn["ranking"]
        best = ranking[0]["index"]
        for item in sorted(ranking, key=lambda view: view["index"]):
            marker = "[green]★ chosen[/]" if item["index"] == best else ""
            console.print(
                Panel(
                    item["content"],
                    title=f"Candidate {item['index'] + 1}  score {item['score']:.2f} {marker}",
                )
            )
        judge = JUDGE_NAMES.get(turn["judge"], f"the {turn['judge']} judge")
        reason = ranking[0]["reasons"][0] if ranking[0]["reasons"] else "(no reason given)"
        console.print(f"[bold]Picked by {judge}. Judge's reason:[/] {reason}\n")

    where = settings.chroma_server or str(settings.chroma_dir)
    console.print(f"Memory lives in Chroma at [bold]{where}[/] (persona versions, pairs and demos).")
    console.print(f"Inspect it with: persona-agent persona show --user {user_id}")
    if not settings.uses_endpoint:
        console.print(
            "[yellow]The embedded model is SmolLM2-135M: it runs everything offline but writes and judges "
            "poorly (about chance).[/] For real quality point persona-agent at any OpenAI-compatible "
            "endpoint:\n  export OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=... "
            "PERSONA_AGENT_MODEL=<name>"
        )
