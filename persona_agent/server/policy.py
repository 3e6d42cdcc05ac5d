"""The graph API's auth: bearer tokens to users, every thread and run owned by the user that made it.

`create_auth` returns the langgraph-sdk `Auth` that `langgraph.json` names (``auth.path``). It
denies by default: a resource or action without a handler here is refused with 403. A run's
``user_id`` (in its context and its configurable) is overwritten with the authenticated identity,
so the graphs learn who they serve from the token only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph_sdk import Auth

from persona_agent.server.resources import ServerResources
from persona_agent.server.tokens import Unauthenticated

OWNER_KEY = "owner"


def create_auth(resources: ServerResources) -> Auth:
    """Build the graph API's auth: tokens to users, every thread and run owned by its creator."""
    auth = Auth()

    @auth.authenticate
    async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
        try:
            user_id = await asyncio.to_thread(resources.authenticate, authorization)
        except Unauthenticated as exc:
            raise Auth.exceptions.HTTPException(status_code=401, detail=str(exc)) from None
        return {"identity": user_id, "display_name": user_id, "is_authenticated": True}

    def owner_filter(ctx: Auth.types.AuthContext) -> Auth.types.FilterType:
        return {OWNER_KEY: ctx.user.identity}

    @auth.on.threads.create
    async def own_new_thread(ctx: Auth.types.AuthContext, value: Auth.types.ThreadsCreate) -> Any:
        metadata = value.get("metadata")
        if metadata is None:
            metadata = value["metadata"] = {}
        metadata[OWNER_KEY] = ctx.user.identity
        return owner_filter(ctx)

    @auth.on.threads.create_run
    async def run_as_caller(ctx: Auth.types.AuthContext, value: Auth.types.RunsCreate) -> Any:
        identity = ctx.user.identity
        metadata = value.get("metadata")
        if metadata is None:
            metadata = value["metadata"] = {}
        metadata[OWNER_KEY] = identity
        kwargs = value.get("kwargs")
        if kwargs is None:
            kwargs = value["kwargs"] = {}
        # The graph learns who it serves from the token only; a user_id in the request is replaced.
        context = kwargs.get("context")
        kwargs["context"] = {**(context if isinstance(context, dict) else {}), "user_id": identity}
        config = kwargs.get("config")
        if isinstance(config, dict):
            configurable = config.get("configurable")
            if not isinstance(configurable, dict):
                configurable = config["configurable"] = {}
            configurable["user_id"] = identity
        return owner_filter(ctx)

    async def only_own_threads(ctx: Auth.types.AuthContext, value: Any) -> Any:
        return owner_filter(ctx)

    auth.on.threads.read(only_own_threads)
    auth.on.threads.delete(only_own_threads)
    auth.on.threads.search(only_own_threads)

    @auth.on.threads.update
    async def keep_thread_owner(ctx: Auth.types.AuthContext, value: Any) -> Any:
        metadata = value.get("metadata")
        if isinstance(metadata, dict):
            metadata[OWNER_KEY] = ctx.user.identity
        return owner_filter(ctx)

    async def read_shared_assistants(ctx: Auth.types.AuthContext, value: Any) -> Any:
        return None  # the graphs' assistants are the same for everyone

    auth.on.assistants.read(read_shared_assistants)
    auth.on.assistants.search(read_shared_assistants)

    @auth.on.store
    async def own_namespace(ctx: Auth.types.AuthContext, value: Any) -> Any:
        namespace = tuple(value.get("namespace") or ())
        if namespace[:1] != (ctx.user.identity,):
            value["namespace"] = (ctx.user.identity, *namespace)
        return None

    @auth.on
    async def deny_everything_else(ctx: Auth.types.AuthContext, value: Any) -> Any:
        raise Auth.exceptions.HTTPException(
            status_code=403, detail=f"{ctx.resource}.{ctx.action} is not allowed on this server"
        )

    return auth
