"""`persona-agent demo`: learn the bundled sample user's taste from their pairs, then answer two questions.

The demo drives the same graphs as the chat and the server: the synthesis graph writes the
persona from the stored pairs (offline, the personal reward model's statements; with an endpoint,
SynthesizeMe), the chat graph drafts candidates conditioned on it and lets this user's judge
pick. Beside each pick it shows the reply the default judge (the population's model, or the LLM
judge without a persona) would have picked, and the statements that made the difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import typer
from langchain_core.callbacks import BaseCallbackHandler
from rich.columns import Columns
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langgraph.graph.state import CompiledStateGraph

    from agent.records import Persona, PreferencePair
    from agent.statements import PreferenceStatement
    from memory.store import PreferenceStore
    from persona_agent.factory import OfflineParts
    from persona_agent.settings import Settings

SAMPLE_USER_FILE = Path(__file__).resolve().parent.parent / "data" / "sample_user.jsonl"
SAMPLE_USER = "sample-user"
QUESTIONS = (
    "How do I keep my houseplants alive while I'm away for two weeks?",
    "What's a good way to learn a new programming language quickly?",
)
JUDGE_NAMES = {
    "persona": "the persona judge (LLM)",
    "default": "the default LLM judge",
    "offline": "this user's offline reward model",
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


def _brief(text: str, limit: int = 60) -> str:
    """One line of a reply: its first non-empty line, clipped."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _pairs_table(pairs: Sequence[PreferencePair], user_id: str) -> Table:
    table = Table(title=f"What {user_id} chose ({len(pairs)} pairs)", title_justify="left", expand=True)
    table.add_column("question", ratio=3)
    table.add_column("chose", ratio=3, style="green")
    table.add_column("over", ratio=3, style="red")
    for pair in pairs:
        table.add_row(_brief(pair.query, 50), _brief(pair.chosen), _brief(pair.rejected))
    return table


def _statements_table(statements: Sequence[PreferenceStatement]) -> Table:
    table = Table(box=None, show_header=True, pad_edge=False, expand=True)
    table.add_column("learnt", ratio=5)
    table.add_column("weight (most people)", justify="right", ratio=2)
    table.add_column("pairs", justify="right", ratio=1)
    for item in statements:
        mark = "[green]+[/]" if item.direction == "more" else "[red]−[/]"
        table.add_row(
            f"{mark} {item.text}", f"{item.weight:+.2f} ({item.population_weight:+.2f})", str(item.n_pairs)
        )
    return table


def _persona_panel(persona: Persona, user_id: str, llm_calls: int) -> Panel:
    from agent.offline_persona import is_offline_persona, statements_of

    accuracy = "n/a" if persona.val_accuracy is None else f"{persona.val_accuracy:.0%}"
    subtitle = f"held-out accuracy {accuracy} · {len(persona.pair_ids)} pairs · {llm_calls} LLM calls"
    if is_offline_persona(persona):
        return Panel(
            _statements_table(statements_of(persona)),
            title=f"Persona v{persona.version} of {user_id}, learnt by the offline reward model",
            subtitle=subtitle,
        )
    return Panel(persona.text, title=f"Persona v{persona.version} of {user_id}", subtitle=subtitle)


async def _synthesize(
    settings: Settings,
    synthesis: CompiledStateGraph[Any, Any, Any, Any],
    user_id: str,
    pairs: Sequence[PreferencePair],
    models: Sequence[BaseChatModel],
    console: Console,
) -> dict[str, Any]:
    """Run the synthesis graph, with a progress bar of LLM calls when an LLM writes the persona."""
    from agent.splits import split_train_val
    from graphs.state import SynthesisContext
    from persona_agent.factory import build_synthesize_me

    context = SynthesisContext(user_id=user_id)
    if settings.persona_source == "offline":
        with console.status("Learning the persona with the offline reward model..."):
            return dict(await synthesis.ainvoke({}, context=context))
    synthesizer = build_synthesize_me(settings, models[0], models[-1])
    train, val = synthesizer.trim(*split_train_val(pairs))
    columns = (TextColumn("Synthesizing persona"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("fit", total=synthesizer.plan_calls(len(train), len(val)))
        # Set on the models themselves: the fit passes its own callbacks (usage counting) to
        # every call, which would replace callbacks given in the run's config.
        for model in models:
            model.callbacks = [_CallProgress(progress, task)]
        try:
            return dict(await synthesis.ainvoke({}, context=context))
        finally:
            for model in models:
                model.callbacks = None


async def _default_pick(
    settings: Settings, judge_model: BaseChatModel, parts: OfflineParts, question: str, candidates: list[str]
) -> tuple[int, str]:
    """Return the candidate the default judge picks and that judge's name."""
    from agent.offline_judge import OfflineJudge
    from agent.records import Turn
    from graphs.judges import LLMJudges

    context = (Turn(role="user", content=question),)
    if settings.judge == "llm":
        judge, _ = LLMJudges(judge_model, structured_method=settings.structured_output_method).build(None, ())
        ranking = await judge.rank(context, candidates)
        return ranking.best.index, "the default LLM judge (no persona)"
    ranking = await OfflineJudge(parts.prior, parts.extractor).rank(context, candidates)
    return ranking.best.index, "most people's model (the population prior)"


class _Explainer:
    """Say which of the user's statements favour their pick over the default one (the offline judge)."""

    def __init__(self, store: PreferenceStore, user_id: str, parts: OfflineParts, max_pairs: int) -> None:
        from agent.statements import describe_preferences
        from agent.taste import fit_user

        # The fit the offline judge makes for this user's turns: the same newest pairs.
        self.parts = parts
        pairs = store.newest_pairs(user_id, max_pairs)
        masses = store.taste_masses(user_id, parts.prior) if pairs else None
        self.model = fit_user(parts.prior, parts.extractor, pairs, masses=masses)
        self.statements = describe_preferences(self.model, parts.prior)

    def why(self, question: str, picked: str, other: str) -> list[str]:
        """Return the statements favouring `picked` over `other`, with their log-odds shares."""
        from agent.offline_persona import explain_pick

        prior, extractor = self.parts.prior, self.parts.extractor
        explained = explain_pick(self.model, prior, extractor, self.statements, question, picked, other)
        return [f"{item.statement.text} ({item.contribution:+.2f} log-odds)" for item in explained[:3]]


async def _run_demo(user_id: str, fresh: bool) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.memory import InMemorySaver

    from agent.formats import read_pairs
    from graphs.state import ChatContext
    from persona_agent.factory import (
        build_chat_graph,
        build_chat_model,
        build_judge_model,
        build_offline_parts,
        build_store,
        build_synthesis_graph,
    )
    from persona_agent.learnt import learnt, statement_lines
    from persona_agent.settings import load_settings

    console = Console()
    settings = load_settings()
    writer = "the offline reward model" if settings.persona_source == "offline" else "SynthesizeMe (LLM)"
    console.print(
        f"[bold]persona-agent demo[/] — model: {settings.model_label} — persona written by {writer}"
    )

    store = build_store(settings)
    if fresh and store.count_pairs(user_id):
        await asyncio.to_thread(store.delete_user, user_id)
    pairs = read_pairs(SAMPLE_USER_FILE, user_id=user_id, source="import", limits=settings.limits)
    added = await asyncio.to_thread(store.add_pairs, user_id, pairs)
    console.print(f"Stored {len(added)} preference pairs of the sample user '{user_id}'.")
    console.print(_pairs_table(pairs, user_id))

    parts = build_offline_parts(settings)
    chat_model = build_chat_model(settings)
    judge_model = build_judge_model(settings)
    models = list({id(model): model for model in (chat_model, judge_model)}.values())
    synthesis = build_synthesis_graph(
        settings, store=store, chat_model=chat_model, judge_model=judge_model, offline_parts=parts
    )
    outcome = (await _synthesize(settings, synthesis, user_id, pairs, models, console))["outcome"]
    persona = store.current_persona(user_id)
    if persona is None:
        console.print(f"[red]No persona was made ({outcome['status']}): {outcome['detail']}[/]")
        raise typer.Exit(1)
    console.print(_persona_panel(persona, user_id, outcome["llm_calls"]))
    if persona.source != "offline":
        view = learnt(store, user_id, persona, lambda: parts, max_pairs=settings.max_pairs_per_synthesis)
        console.print(
            Panel(
                "\n".join(statement_lines(view.statements)) or "no departure from most people's taste yet",
                title=f"What the offline reward model measured on the same {view.n_pairs} pairs",
            )
        )

    chat = build_chat_graph(
        settings,
        store=store,
        checkpointer=InMemorySaver(),
        chat_model=chat_model,
        judge_model=judge_model,
        offline_parts=parts,
    )
    explainer = (
        _Explainer(store, user_id, parts, settings.max_pairs_per_synthesis)
        if settings.judge == "offline"
        else None
    )
    for question in QUESTIONS:
        console.rule(f"[bold]{question}")
        config: RunnableConfig = {"configurable": {"thread_id": str(uuid4())}}
        with console.status("Drafting candidates with the persona, then judging them..."):
            turn = await chat.ainvoke(
                {"messages": [HumanMessage(question)]}, config=config, context=ChatContext(user_id=user_id)
            )
            candidates = list(turn["candidates"])
            mine = turn["ranking"][0]["index"]
            default, default_name = await _default_pick(settings, judge_model, parts, question, candidates)
        judge = JUDGE_NAMES.get(turn["judge"], f"the {turn['judge']} judge")
        console.print(f"{len(candidates)} candidates drafted; [bold]picked by {judge}[/].")
        mine_panel = Panel(
            candidates[mine],
            title=f"[green]★ {user_id}'s pick[/]: candidate {mine + 1}",
            border_style="green",
        )
        if default == mine:
            console.print(mine_panel)
            console.print(f"{default_name.capitalize()} would pick the same reply.")
            if explainer is not None and len(turn["ranking"]) > 1:
                # What the learnt statements add for the pick over this user's runner-up.
                runner = turn["ranking"][1]["index"]
                reasons = explainer.why(question, candidates[mine], candidates[runner])
                why = "; ".join(reasons) or "none: the reply's other features decided, as for most people"
                console.print(f"[bold]Statements for it over candidate {runner + 1}:[/] {why}\n")
            continue
        default_panel = Panel(candidates[default], title=f"Default pick: candidate {default + 1}")
        console.print(Columns([default_panel, mine_panel], equal=True, expand=True))
        if explainer is not None:
            reasons = explainer.why(question, candidates[mine], candidates[default])
            why = "; ".join(reasons) or "no statement: the reply's content (embedding) decided"
        else:
            why = "; ".join(turn["ranking"][0]["reasons"][:2]) or "(no reason given)"
        console.print(f"[bold]Why {user_id}'s judge differs from {default_name}:[/] {why}\n")

    where = settings.chroma_server or str(settings.chroma_dir)
    console.print(f"Memory lives in Chroma at [bold]{where}[/] (persona versions, pairs and demos).")
    console.print(
        f"Chat as this user: [bold]persona-agent chat --user {user_id}[/] (/pick N teaches it, "
        f"/persona shows what it learnt); inspect: persona-agent persona show --user {user_id}"
    )
    if not settings.uses_endpoint:
        console.print(
            "[yellow]The embedded model is SmolLM2-135M: it drafts the replies offline but cannot write or "
            "judge a persona (about chance), so the offline reward model does both.[/] To let an LLM write "
            "the persona and judge, point persona-agent at any OpenAI-compatible endpoint:\n"
            "  export OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=... PERSONA_AGENT_MODEL=<name>"
        )
