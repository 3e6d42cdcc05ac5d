"""Use the served chat graph as a node of your own graph, over HTTP, with LangGraph's `RemoteGraph`.

`persona-agent serve` serves the chat graph; another application, in another process or on
another machine, adds it to its own `StateGraph` as a `RemoteGraph` node, as it would add a
compiled graph. The outer graph here is the support graph of `examples.chat_as_node` with the
assistant node remote instead of in-process: the keys the two graphs share (`messages`,
`feedback`, `candidates`, `judge`) go to the server as the run's input and come back as its
output.

The bearer token is the only identity: the server takes the user id from it and ignores any in
the request, so the outer graph's context needs none. The outer graph's thread id (a UUID, as the
LangGraph server wants) is also the remote thread's id, so with a checkpointer in the outer graph
every turn continues one thread on the server, which keeps the candidates feedback refers to.

Run against ``persona-agent serve --dev`` (where ``dev-<user>`` signs in as <user>):
``python -m examples.remote_chat --url http://127.0.0.1:2024 --token dev-alice "How do I keep basil alive?"``
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Sequence

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.pregel.remote import RemoteGraph
from langgraph.types import Checkpointer

from examples.chat_as_node import SupportState, build_support_graph
from graphs.state import ChatContext


def remote_chat(url: str, token: str) -> RemoteGraph:
    """Return the chat graph served at `url` as a `RemoteGraph` that signs in with a bearer token."""
    return RemoteGraph("chat", url=url, headers={"Authorization": f"Bearer {token}"})


def build_remote_support_graph(
    url: str, token: str, *, checkpointer: Checkpointer = None
) -> CompiledStateGraph[SupportState, ChatContext, SupportState, SupportState]:
    """Compile the support graph with the served chat graph as its assistant node."""
    return build_support_graph(remote_chat(url, token), checkpointer=checkpointer)


async def main(
    url: str, token: str, questions: Sequence[str], *, pick: int | None = None, thread_id: str | None = None
) -> None:
    """Ask each question in one thread through the outer graph and print the replies; then send a pick."""
    graph = build_remote_support_graph(url, token, checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": thread_id or str(uuid.uuid4())}}
    for question in questions:
        state = await graph.ainvoke({"messages": [HumanMessage(question)]}, config)
        print(state["messages"][-1].content)
        print(f"({len(state.get('candidates', []))} candidates, judged by the {state.get('judge')} judge)")
    if pick is not None:
        # Feedback on the last turn: the server pairs that candidate against the others it drafted.
        state = await graph.ainvoke({"feedback": {"choice": pick}}, config)
        print(f"(you preferred: {state['messages'][-1].content})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:2024", help="Where persona-agent serve listens.")
    parser.add_argument("--token", required=True, help="Your bearer token (dev-<user> with serve --dev).")
    parser.add_argument("--thread", help="A thread id (UUID) to continue; default: a new thread.")
    parser.add_argument("--pick", type=int, help="Then prefer this candidate (0-based) of the last reply.")
    parser.add_argument("questions", nargs="+")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.token, args.questions, pick=args.pick, thread_id=args.thread))
