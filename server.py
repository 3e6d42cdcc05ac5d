"""The composition root for serving: the graphs, auth and HTTP app that `langgraph.json` names.

`langgraph dev` (started by ``persona-agent serve``) imports this module as ``server`` for three
things: `chat_graph` and `synthesis_graph` (async graph factories returning the graphs built at
start), `auth` (`persona_agent.server.policy`: bearer tokens mapped to user ids, every thread and
run owned by the user that made it) and `app` (`persona_agent.server.routes`: the memory routes
and the memory inspector, mounted beside the graph API). All three share one `ServerResources`,
which builds the store, models and graphs from `Settings` when `app`'s lifespan starts, so nothing
is built at import time and no request waits for a build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from persona_agent.server.policy import create_auth
from persona_agent.server.resources import DEFAULT_GRAPHS, ServerResources
from persona_agent.server.routes import create_app

if TYPE_CHECKING:
    from langgraph.pregel import Pregel

resources = ServerResources(build_at_start=tuple(DEFAULT_GRAPHS))
app = create_app(resources)
auth = create_auth(resources)


async def chat_graph() -> Pregel:
    """Return the chat graph (built at start, shared by every run)."""
    return await resources.agraph("chat")


async def synthesis_graph() -> Pregel:
    """Return the persona-synthesis graph (built at start, shared by every run)."""
    return await resources.agraph("synthesis")
