"""`persona-agent chat`: talk to the assistant in the terminal and pick the replies you prefer."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph

    from agent.records import Persona
    from graphs.state import SynthesisOutcome
    from memory.store import PreferenceStore
    from persona_agent.commands.starting import ChatStart
    from persona_agent.learnt import Learnt
    from persona_agent.settings import CheckpointDurability, Settings

HELP = (
    "Type a message to chat. Commands: /candidates shows every drafted reply, /pick N keeps reply N "
    "as the one you prefer (this teaches the assistant), /retry asks for another reply (going on "
    "with it teaches a weak preference), /edit TEXT rewrites the last reply (/edit alone: type it "
    "over several lines, end with a line holding only '.'), /persona shows what it has learned and "
    "any update in progress (/persona pin|unpin|remove N, /persona add TEXT keep your own statements), "
    "/start picks a starting persona or asks three quick questions, /quit ends."
)
EDIT_END = "."  # the line that ends a multi-line /edit
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
    from persona_agent import factory
    from persona_agent.commands.starting import ChatStart
    from persona_agent.learnt import learnt

    console = Console()
    store = factory.build_store(settings)
    chat_model, judge_model = factory.build_chat_model(settings), factory.build_judge_model(settings)
    async with factory.build_checkpointer(settings) as checkpointer:
        graph = factory.build_chat_graph(
            settings, store=store, checkpointer=checkpointer, chat_model=chat_model, judge_model=judge_model
        )
        synthesis_graph = factory.build_synthesis_graph(
            settings, store=store, chat_model=chat_model, judge_model=judge_model
        )
        reader = _LineReader(console)
        session = _Session(
            console,
            graph,
            synthesis_graph,
            store,
            user_id,
            thread_id,
            settings.checkpoint_durability,
            notify=reader.notify,
            read=reader.read,
            measure=lambda persona: learnt(
                store,
                user_id,
                persona,
                lambda: factory.build_offline_parts(settings),
                max_pairs=settings.max_pairs_per_synthesis,
            ),
        )
        session.start = ChatStart(console, store, user_id, session.learn_from, settings.first_synthesis_at)
        console.print(f"[bold]persona-agent chat[/] — {settings.model_label} — {user_id}, thread {thread_id}")
        console.print(HELP)
        await session.start.offer()
        try:
            while True:
                try:
                    line = (await reader.read(session.prompt)).strip()
                except (EOFError, asyncio.CancelledError):  # end of input, or Ctrl-C at the prompt
                    break
                if not line:
                    continue
                if line in ("/quit", "/exit"):
                    break
                await session.handle(line)
        finally:
            reader.close()
        await session.finish_update()
    console.print("Bye.")


class _LineReader:
    """Read the terminal on a thread of its own: a background persona update runs while the prompt waits."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.waiting: Callable[[], str] | None = None  # the prompt, while a line is awaited
        self._requests: queue.Queue[tuple[str, asyncio.Future[str]] | None] = queue.Queue()
        threading.Thread(target=self._serve, name="chat-input", daemon=True).start()

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            prompt, future = request
            loop = future.get_loop()
            try:
                line = self.console.input(prompt)
            except Exception as exc:  # EOFError at the end of input
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, line, None)

    async def read(self, prompt: Callable[[], str]) -> str:
        """Show `prompt()` and return the next line the user enters."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting = prompt
        self._requests.put((prompt(), future))
        try:
            return await future
        finally:
            self.waiting = None

    def notify(self, text: str) -> None:
        """Print a notice; show the prompt again (as it reads now) when the notice interrupted it."""
        prompt = self.waiting
        self.console.print(("\n" if prompt else "") + text)
        if prompt:
            self.console.print(prompt(), end="")

    def close(self) -> None:
        """Let the reading thread end once it is not waiting for a line."""
        self._requests.put(None)


def _settle(future: asyncio.Future[str], line: str | None, error: Exception | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(line or "")


class _Session:
    """One terminal conversation over the chat graph; persona updates run in the background."""

    def __init__(
        self,
        console: Console,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        synthesis_graph: CompiledStateGraph[Any, Any, Any, Any],
        store: PreferenceStore,
        user_id: str,
        thread_id: str,
        durability: CheckpointDurability,
        *,
        notify: Callable[[str], None],
        read: Callable[[Callable[[], str]], Awaitable[str]] | None = None,
        measure: Callable[[Persona], Learnt] | None = None,
    ) -> None:
        self.console = console
        self.read = read  # reads further lines (a multi-line /edit)
        # what the offline reward model measures, shown beside a persona an LLM wrote
        self.measure = measure
        self.graph = graph
        self.synthesis_graph = synthesis_graph
        self.store = store
        self.user_id = user_id
        self.config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        self.durability = durability
        self.notify = notify
        # Runs of the thread and the update that records a synthesis outcome never overlap.
        self.thread_lock = asyncio.Lock()
        self.update: asyncio.Task[None] | None = None
        self.stage = ("", "")
        self.update_started = 0.0
        self.start: ChatStart | None = None  # `/start`: starting personas and the quiz

    @property
    def updating(self) -> bool:
        """True while a persona update runs in the background."""
        return self.update is not None and not self.update.done()

    def prompt(self) -> str:
        """The input prompt; it names the stage of a running persona update."""
        if self.updating:
            return f"[dim](updating persona: {self.stage[0]})[/] [bold cyan]you>[/] "
        return "[bold cyan]you>[/] "

    async def handle(self, line: str) -> None:
        """Run one command or chat message, reporting the project's errors without exiting."""
        from agent.errors import PersonaAgentError

        command, _, argument = line.partition(" ")
        try:
            if self.start is not None and await self.start.answer(line):
                return  # an answer to the starting quiz
            if command == "/help":
                self.console.print(HELP)
            elif command == "/candidates":
                await self.show_candidates()
            elif command == "/pick":
                await self.pick(argument.strip())
            elif command == "/retry":
                await self.retry()
            elif command == "/edit":
                await self.edit(argument.strip())
            elif command == "/persona" and argument.strip():
                await self.edit_persona(argument.strip())
            elif command == "/persona":
                await self.show_persona()
            elif command == "/start" and self.start is not None:
                await self.start.handle(argument.strip())
            elif command.startswith("/"):
                self.console.print(f"[red]Unknown command {command}.[/] {HELP}")
            else:
                await self.send(line)
        except PersonaAgentError as exc:
            self.console.print(f"[red]{exc}[/]")

    async def _run(self, graph_input: dict[str, Any]) -> dict[str, Any]:
        """Stream one run, printing the reply as soon as it is chosen; start a due persona update."""
        async with self.thread_lock:
            with self.console.status("Thinking...") as status:
                async for update in self.graph.astream(
                    graph_input,
                    self.config,
                    context={"user_id": self.user_id, "synthesis_mode": "caller"},
                    stream_mode="updates",
                    durability=self.durability,
                ):
                    for node, values in update.items():
                        if node == "draft_replies":
                            status.update(f"Judging {len(values.get('candidates', []))} candidates...")
                        elif node in _REPLY_NODES:
                            self._print_reply(values)
            return dict((await self.graph.aget_state(self.config)).values)

    def _start_update_if_due(self, state: dict[str, Any]) -> None:
        """Start a persona update in the background when the run found one due and none is running."""
        if state.get("synthesis_due") != "caller" or self.updating:
            return
        pair_count = int(state.get("pair_count") or 0)
        self.stage, self.update_started = ("load", "reading your pairs"), time.monotonic()
        self.update = asyncio.create_task(self._update_persona(pair_count))
        self.console.print(
            f"Updating your persona from {pair_count} pairs in the background; keep chatting. "
            "/persona shows its progress."
        )

    async def _update_persona(self, pair_count: int) -> None:
        """Run a synthesis, record its outcome in the thread, and say how it ended."""
        from graphs.chat import synthesis_recorded
        from graphs.synthesis import run_synthesis

        def on_stage(stage: str, detail: str) -> None:
            self.stage = (stage, detail)

        outcome = await run_synthesis(self.synthesis_graph, self.user_id, on_stage=on_stage)
        async with self.thread_lock:
            await self.graph.aupdate_state(
                self.config, synthesis_recorded(outcome, pair_count), as_node="synthesize_persona"
            )
        self.update = None  # finished: the prompt no longer shows an update
        self.notify(self._synthesis_line(outcome))

    async def finish_update(self) -> None:
        """Wait for a running persona update before leaving; Ctrl-C stops it (the current persona stays)."""
        if not self.updating or self.update is None:
            return
        self.console.print(
            f"Waiting for the persona update to finish ({self.stage[1]}); Ctrl-C stops it "
            "and keeps the current persona."
        )
        try:
            await asyncio.shield(self.update)
        except asyncio.CancelledError:
            self.update.cancel()
            self.console.print("Persona update stopped; the current persona stays.")

    def _print_reply(self, values: dict[str, Any]) -> None:
        messages = values.get("messages") or []
        if not messages:
            return
        count = len(values.get("candidates", [])) or len(values.get("ranking", []))
        subtitle = f"best of {count} · /candidates · /pick N · /retry · /edit" if count > 1 else None
        self.console.print(Panel(str(messages[-1].content), title="assistant", subtitle=subtitle))

    @staticmethod
    def _synthesis_line(outcome: SynthesisOutcome) -> str:
        if outcome["status"] == "accepted":
            return f"[green]Persona updated to v{outcome['persona_version']}[/] ({outcome['detail']})."
        return f"[yellow]Persona not updated: {outcome['status']}[/] ({outcome['detail']})."

    async def learn_from(self, graph_input: dict[str, Any]) -> dict[str, Any]:
        """Run feedback through the graph; start a persona update when it made one due."""
        state = await self._run(graph_input)
        self._start_update_if_due(state)
        return state

    async def send(self, text: str) -> None:
        """Send a chat message and show the chosen reply."""
        from langchain_core.messages import HumanMessage

        state = await self._run({"messages": [HumanMessage(text)]})
        if state.get("pairs_added"):  # the user went on after a /retry: they kept the new reply
            self.console.print(
                f"Stored {len(state['pairs_added'])} weak preference pair(s): the reply you kept over "
                f"the one(s) you asked to redo; you have {state.get('pair_count', 0)} in all."
            )
        self._start_update_if_due(state)

    async def retry(self) -> None:
        """Ask for another reply to the last message; going on with it stores a weak preference."""
        await self._run({"feedback": {"regenerate": True}})
        self.console.print(
            "Another reply to your message. Send your next message to keep it (this teaches the "
            "assistant a weak preference over the one you asked to redo), or /retry again."
        )

    async def edit(self, text: str) -> None:
        """Rewrite the last reply; the rewrite is stored as preferred to the original at once."""
        if not text and self.read is not None:
            self.console.print(f"Type the reply as it should read; end with a line of only {EDIT_END!r}.")
            lines: list[str] = []
            try:
                while (line := await self.read(lambda: "[dim]edit>[/] ")) != EDIT_END:
                    lines.append(line)
            except EOFError:  # the input ended before the edit did: nothing is stored
                self.console.print("[red]Edit not finished; the reply stays as it was.[/]")
                return
            text = "\n".join(lines).strip()
        after = await self._run({"feedback": {"edited": text}})
        self.console.print(
            f"Stored your edit over the original reply (an inferred preference); you have "
            f"{after.get('pair_count', 0)} pairs in all. The conversation continues from your text."
        )
        self._start_update_if_due(after)

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
        self._start_update_if_due(after)

    async def edit_persona(self, argument: str) -> None:
        """Pin, unpin or remove a numbered statement of the persona, or add one: ``pin 2``, ``add TEXT``."""
        from persona_agent.own_statements import ACTIONS, edit_statement, outcome_line

        action, _, rest = argument.partition(" ")
        if action not in ACTIONS:
            self.console.print(
                f"Usage: /persona {'|'.join(ACTIONS)} N (or add TEXT).", style="red", markup=False
            )
            return
        outcome = await asyncio.to_thread(edit_statement, self.store, self.user_id, action, rest)
        self.console.print(outcome_line(outcome), markup=False)

    async def show_persona(self) -> None:
        """Show the current persona, when it was synthesized, the judge's agreement and any running update."""
        from agent.offline_persona import is_offline_persona
        from persona_agent.learnt import agreement_line, agreement_of, statement_lines
        from persona_agent.own_statements import listing_lines

        if self.updating:
            stage, detail = self.stage
            elapsed = time.monotonic() - self.update_started
            self.console.print(
                f"[cyan]A persona update is running[/] ({elapsed:.0f} s so far): {stage}, {detail}. "
                "The next turn after it is saved uses the new persona."
            )
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
        if self.measure is not None and not is_offline_persona(persona):
            view = await asyncio.to_thread(self.measure, persona)
            lines = statement_lines(view.statements) or ["no clear departure from most people yet"]
            self.console.print(
                f"What the offline reward model measured on your {view.n_pairs} newest pairs:\n"
                + "\n".join(lines)
            )
        listed = await asyncio.to_thread(self.store.listed_statements, self.user_id)
        numbered = "\n".join(listing_lines(listed))
        self.console.print(f"Statements (/persona pin|unpin|remove N):\n{numbered}", markup=False)
        self.console.print(agreement_line(await asyncio.to_thread(agreement_of, self.store, self.user_id)))
