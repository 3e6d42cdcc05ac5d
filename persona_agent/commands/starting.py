"""Starting points for a new user: `persona-agent persona start` and `/start` in chat.

Both list the archetypes (`persona_agent.starting`), and choose one by its key; in chat,
``/start quiz`` asks the three either-or questions of the starting quiz, one at a time, and sends
each pick to the chat graph as a quiz answer, which stores it as an explicit pair.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from persona_agent.commands.pairs import JsonOption, UserOption, open_store, print_json

if TYPE_CHECKING:
    from rich.console import Console

    from agent.starting import QuizQuestion
    from memory.store import PreferenceStore

QUIZ = "quiz"


def archetype_lines(view: dict[str, Any]) -> list[str]:
    """Write each archetype as a line (key, title, how many people), marking the user's choice."""
    chosen = (view["chosen"] or {}).get("archetype")
    return [
        f"{item['key']:<12} {item['title']} ({item['users']} people in the data)"
        + ("  (your start)" if item["key"] == chosen else "")
        for item in view["archetypes"]
    ]


def start(
    user: UserOption,
    key: Annotated[str | None, typer.Argument(help="The archetype to start from; none lists them.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Start a new user from an archetype: a persona at once, and an offline judge that starts there."""
    from persona_agent.settings import load_settings
    from persona_agent.starting import start_from_archetype, starting_view

    store = open_store()
    if key is not None:
        persona, choice = start_from_archetype(store, user, key)
        if json_output:
            chosen = {"user_id": user, "chosen": choice.to_json()}
            print_json({**chosen, "persona": persona.model_dump(mode="json")})
        else:
            typer.echo(f"{user} starts from the archetype {choice.archetype!r}: persona v{persona.version}")
            typer.echo("")
            typer.echo(persona.text)
        return
    view = starting_view(store, user, load_settings().first_synthesis_at)
    if json_output:
        print_json(view)
        return
    typer.echo("Archetypes (persona-agent persona start KEY --user U picks one):")
    typer.echo("\n".join(f"  {line}" for line in archetype_lines(view)))


class ChatStart:
    """`/start` in chat: list the archetypes, choose one, or answer the starting quiz."""

    def __init__(
        self,
        console: Console,
        store: PreferenceStore,
        user_id: str,
        send: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
        first_synthesis_at: int,
    ) -> None:
        self.console = console
        self.store = store
        self.user_id = user_id
        self.send = send  # runs one input through the chat graph, returns the thread's state
        self.first_synthesis_at = first_synthesis_at
        self.pending: list[QuizQuestion] = []

    async def offer(self) -> None:
        """Say how to start, while the user has few pairs and no persona learnt from them."""
        import asyncio

        from persona_agent.starting import start_offered

        if await asyncio.to_thread(start_offered, self.store, self.user_id, self.first_synthesis_at):
            self.console.print(
                "New here? /start lists starting personas to pick from, or /start quiz asks three quick "
                "either-or questions."
            )

    async def handle(self, argument: str) -> None:
        """Run ``/start``, ``/start KEY`` or ``/start quiz``."""
        import asyncio

        from persona_agent.starting import start_from_archetype, starting_view

        if not argument:
            view = await asyncio.to_thread(starting_view, self.store, self.user_id, self.first_synthesis_at)
            self.console.print("Starting personas (/start KEY picks one; /start quiz asks three questions):")
            for line in archetype_lines(view):
                self.console.print(f"  {line}", markup=False)
            return
        if argument == QUIZ:
            from agent.starting import load_quiz

            self.pending = list(load_quiz())
            self.console.print(f"{len(self.pending)} quick questions: answer each with 1 or 2.")
            self.ask()
            return
        persona, choice = await asyncio.to_thread(start_from_archetype, self.store, self.user_id, argument)
        self.console.print(
            f"You start from {choice.archetype!r} (persona v{persona.version}); "
            "your picks move it from here.\n" + persona.text,
            markup=False,
        )

    def ask(self) -> None:
        """Show the next quiz question and its two replies."""
        question = self.pending[0]
        self.console.print(f"[bold]Which reply do you prefer?[/] ({question.taste})")
        self.console.print(f"  Q: {question.question}", markup=False)
        for number, reply in enumerate(question.replies, start=1):
            self.console.print(f"  {number}) {reply}", markup=False)

    async def answer(self, line: str) -> bool:
        """Take `line` as the answer to the pending question; False (and the quiz ends) when it is not one."""
        if not self.pending:
            return False
        if line not in ("1", "2"):
            self.pending = []
            self.console.print("Quiz stopped; /start quiz asks again.")
            return False
        question = self.pending.pop(0)
        state = await self.send({"feedback": {QUIZ: {"question": question.key, "choice": int(line) - 1}}})
        if self.pending:
            self.ask()
        else:
            self.console.print(
                f"Thanks: your answers are stored as preference pairs ({state.get('pair_count', 0)} in all)."
            )
        return True
