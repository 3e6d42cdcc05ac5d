"""`persona-agent chat`: talk to the assistant in the terminal and pick the replies you prefer."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph

    from memory.store import PreferenceStore
    from persona_agent.settings import CheckpointDurability, Settings

HELP = (
    "Type a message to chat. Commands: /candidates shows every drafted reply, /pick N keeps reply N "
    "as the one you prefer (this teaches the assistant), /persona shows what it has learned, /quit ends."
)
_REPLY_NODES = ("judge_replies", "__error_handler__judge_replies", "__error_handler__draft_replies")


def chat(
    user: str = typer.Option(..., "--user", "-u", help="Your user id: your pairs and persona live under it."),
    thread: str | None = typer.Option(None, help="Conversation thread to resume (default: one per user)."),
    new: bool = typer.Option(False, "--new", help="Start a new conversation thread."),
) -> None:
    """Chat in the terminal; pick the replies you prefer and the assistant learns your taste."""
    from agent.records import check_user_id
    from persona_agent.settings import load_settings

    try:
        check_user_id(user)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--user") from None
    thread_id = f"cli-{uuid.uuid4().hex[:8]}" if new else thread or f"cli-{user}"
    asyncio.run(_chat(load_settings(), user, thread_id))


async def _chat(settings: Settings, user_id: str, thread_id: str) -> None:
    from persona_agent.factory import build_chat_graph, build_checkpointer, build_store

    console = Console()
    store = build_store(settings)
    async with build_checkpointer(settings) as checkpointer:
        graph = build_chat_graph(settings, store=store, checkpointer=checkpointer)
        session = _Session(console, graph, store, user_id, thread_id, settings.checkpoint_durability)
        console.print(f"[bold]persona-agent chat[/] — {settings.model_label} — {user_id}, thread {thread_id}")
        console.print(HELP)
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            await session.handle(line)
    console.print("Bye.")


class _Session:
    """One terminal conversation over the chat graph."""

    def __init__(
        self,
        console: Console,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        store: PreferenceStore,
        user_id: str,
        thread_id: str,
        durability: CheckpointDurability,
    ) -> None:
        self.console = console
        self.graph = graph
        self.store = store
        self.user_id = user_id
        self.config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        self.durability = durability

    async def handle(self, line: str) -> None:
        """Run one command or chat message, reporting the project's errors without exiting."""
        from agent.errors import PersonaAgentError

        command, _, argument = line.partition(" ")
        try:
            if command == "/help":
                self.console.print(HELP)
            elif command == "/candidates":
                await self.show_candidates()
            elif command == "/pick":
                await self.pick(argument.strip())
            elif command == "/persona":
                await self.show_persona()
            elif command.startswith("/"):
                self.console.print(f"[red]Unknown command {command}.[/] {HELP}")
            else:
                await self.send(line)
        except PersonaAgentError as exc:
            self.console.print(f"[red]{exc}[/]")

    async def _run(self, graph_input: dict[str, Any]) -> dict[str, Any]:
        """Stream one run, printing the reply as soon as it is chosen and any synthesis outcome."""
        with self.console.status("Thinking...") as status:
            async for update in self.graph.astream(
                graph_input,
                self.config,
                context={"user_id": self.user_id},
                stream_mode="updates",
                durability=self.durability,
            ):
                for node, values in update.items():
                    if node == "draft_replies":
                        status.update(f"Judging {len(values.get('candidates', []))} candidates...")
                    elif node in _REPLY_NODES:
                        self._print_reply(values)
                        status.update("Updating your persona...")
                    elif node == "synthesize_persona":
                        self._print_synthesis(values["synthesis"])
        return dict((await self.graph.aget_state(self.config)).values)

    def _print_reply(self, values: dict[str, Any]) -> None:
        messages = values.get("messages") or []
        if not messages:
            return
        count = len(values.get("candidates", [])) or len(values.get("ranking", []))
        subtitle = f"best of {count} · /candidates · /pick N" if count > 1 else None
        self.console.print(Panel(str(messages[-1].content), title="assistant", subtitle=subtitle))

    def _print_synthesis(self, outcome: dict[str, Any]) -> None:
        if outcome["status"] == "accepted":
            version, detail = outcome["persona_version"], outcome["detail"]
            self.console.print(f"[green]Persona updated to v{version}[/] ({detail}).")
        else:
            self.console.print(f"[yellow]Persona not updated: {outcome['status']}[/] ({outcome['detail']}).")

    async def send(self, text: str) -> None:
        """Send a chat message and show the chosen reply."""
        from langchain_core.messages import HumanMessage

        await self._run({"messages": [HumanMessage(text)]})

    async def show_candidates(self) -> None:
        """Show every candidate of the last turn with its judge score."""
        state = (await self.graph.aget_state(self.config)).values
        candidates = state.get("candidates") or []
        if not candidates:
            self.console.print("No candidates yet: send a message first.")
            return
        ranking = {item["index"]: item for item in state.get("ranking") or []}
        best = state["ranking"][0]["index"] if state.get("ranking") else None
        table = Table("#", "reply", "score", title=f"Candidates (judge: {state.get('judge', '?')})")
        for index, text in enumerate(candidates):
            score = ranking.get(index, {}).get("score")
            mark = " ★" if index == best else ""
            table.add_row(f"{index + 1}{mark}", text, "" if score is None else f"{score:.2f}")
        self.console.print(table)

    async def pick(self, argument: str) -> None:
        """Keep candidate N of the last turn as the preferred reply; each other candidate becomes a pair."""
        state = (await self.graph.aget_state(self.config)).values
        candidates = state.get("candidates") or []
        if not argument.isdigit() or not 1 <= int(argument) <= len(candidates):
            limit = f"1-{len(candidates)}" if candidates else "a candidate number (send a message first)"
            self.console.print(f"[red]Usage: /pick N with N in {limit}.[/]")
            return
        after = await self._run({"feedback": {"choice": int(argument) - 1}})
        added = len(after.get("pairs_added") or [])
        self.console.print(
            f"Stored {added} preference pairs; you have {after.get('pair_count', 0)} in all. "
            "The conversation continues from the reply you picked."
        )

    async def show_persona(self) -> None:
        """Show the current persona, its version and when it was synthesized, and the judge's agreement."""
        from persona_agent.learnt import agreement_line, agreement_of

        persona = await asyncio.to_thread(self.store.current_persona, self.user_id)
        count = await asyncio.to_thread(self.store.count_pairs, self.user_id)
        if persona is None:
            self.console.print(
                f"No persona yet ({count} pairs stored). Pick replies with /pick N to teach it."
            )
            return
        accuracy = "n/a" if persona.val_accuracy is None else f"{persona.val_accuracy:.0%}"
        when = persona.created_at.strftime("%Y-%m-%d %H:%M UTC")
        self.console.print(
            Panel(
                persona.text,
                title=f"Persona v{persona.version} of {self.user_id}",
                subtitle=f"synthesized {when} · held-out accuracy {accuracy} · {count} pairs stored",
            )
        )
        self.console.print(agreement_line(await asyncio.to_thread(agreement_of, self.store, self.user_id)))
