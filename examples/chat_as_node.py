"""Use the compiled chat graph as one node of another graph.

The outer graph triages each input: a "/help" message gets a canned answer, anything else (a
question, or feedback on the last reply) goes to the personalized assistant, which is the chat
graph added as a node. Keys the two graphs share (`messages`, `feedback`, `candidates`, `judge`)
flow between them; the run context carries the user id to both. The chat graph is compiled with
``checkpointer=True`` so its own state (the last candidates, which feedback refers to) persists in
the outer graph's thread.

Run: ``python -m examples.chat_as_node --user alice "How do I keep basil alive?"``
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels import EphemeralValue
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.pregel.protocol import PregelProtocol
from langgraph.types import Checkpointer
from typing_extensions import TypedDict

from graphs.state import ChatContext, Feedback

HELP_TEXT = "Ask me anything. After a reply, send feedback {'choice': i} to say which candidate you prefer."


class SupportState(TypedDict, total=False):
    """The outer graph's state; the keys it shares with the chat graph flow into and out of it."""

    messages: Annotated[list[AnyMessage], add_messages]
    feedback: Annotated[Feedback | None, EphemeralValue]
    candidates: list[str]
    judge: str
    route: str


async def triage(state: SupportState) -> dict[str, Any]:
    """Send "/help" to the canned answer and everything else (with its feedback) to the assistant."""
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    asks_help = isinstance(last, HumanMessage) and last.text.strip() == "/help"
    # `feedback` is ephemeral (visible for one step only): pass it on to the next node.
    return {"route": "answer_help" if asks_help else "assistant", "feedback": state.get("feedback")}


async def answer_help(state: SupportState) -> dict[str, Any]:
    """Answer with the help text."""
    return {"messages": [AIMessage(HELP_TEXT)]}


def build_support_graph(
    assistant: PregelProtocol[Any, Any, Any, Any], *, checkpointer: Checkpointer = None
) -> CompiledStateGraph[SupportState, ChatContext, SupportState, SupportState]:
    """Compile the outer graph around the chat graph: compiled here, or served (`examples.remote_chat`)."""
    builder = StateGraph(SupportState, context_schema=ChatContext)
    builder.add_node(triage)
    builder.add_node(answer_help)
    builder.add_node("assistant", assistant)
    builder.add_edge(START, "triage")
    builder.add_conditional_edges("triage", lambda state: state["route"], ["answer_help", "assistant"])
    builder.add_edge("answer_help", END)
    builder.add_edge("assistant", END)
    return builder.compile(checkpointer=checkpointer)


async def main(user_id: str, question: str) -> None:
    """Build the parts from settings, ask one question through the outer graph, print the reply."""
    from persona_agent.factory import build_chat_graph, build_checkpointer
    from persona_agent.settings import load_settings

    settings = load_settings()
    assistant = build_chat_graph(settings, checkpointer=True)
    # The thread lives where the settings say: PostgreSQL with a checkpoint URL, else SQLite.
    async with build_checkpointer(settings) as checkpointer:
        graph = build_support_graph(assistant, checkpointer=checkpointer)
        config: RunnableConfig = {"configurable": {"thread_id": f"example-{user_id}"}}
        state = await graph.ainvoke(
            {"messages": [HumanMessage(question)]},
            config,
            context=ChatContext(user_id=user_id),
            durability=settings.checkpoint_durability,
        )
    print(state["messages"][-1].content)
    print(f"({len(state.get('candidates', []))} candidates, judged by the {state.get('judge')} judge)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="example-user")
    parser.add_argument("question")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.user, arguments.question))
