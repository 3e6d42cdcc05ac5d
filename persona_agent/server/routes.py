"""The memory routes under ``/memory`` and the memory inspector page, as one Starlette app.

The LangGraph server mounts this app beside its graph API (``http.app`` in `langgraph.json`). Its
auth middleware does not apply to custom routes, so every memory route authenticates itself with
the same token map as the graph API's auth; the inspector page and its assets need no token, so
they load in a browser. The user id comes only from the token; no route accepts one as input.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agent.errors import InvalidPreference, PersonaAgentError
from agent.records import PAIR_SOURCES
from persona_agent.server.resources import ServerResources
from persona_agent.server.tokens import Unauthenticated

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

STATIC_DIR = Path(str(importlib.resources.files("persona_agent") / "static"))
MAX_IMPORT_BYTES = 20 * 1024 * 1024
MAX_PAGE = 200
MAX_DEMOS = 16

logger = logging.getLogger(__name__)


# --- errors ------------------------------------------------------------------------------------
def error_response(exc: PersonaAgentError) -> JSONResponse:
    """Turn one of the project's errors into a JSON response with its HTTP status."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
    return JSONResponse(
        {"error": type(exc).__name__, "detail": str(exc)}, status_code=exc.http_status, headers=headers
    )


def _int_param(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidPreference(f"{name}: must be an integer, got {raw[:20]!r}") from None
    if not low <= value <= high:
        raise InvalidPreference(f"{name}: must be between {low} and {high}, got {value}")
    return value


Handler = Callable[[Request, str, ServerResources], Awaitable[Response]]


def _authenticated(resources: ServerResources, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a route: resolve the caller from the bearer token, then map project errors to JSON."""

    async def endpoint(request: Request) -> Response:
        try:
            user_id = resources.authenticate(request.headers.get("authorization"))
            return await handler(request, user_id, resources)
        except PersonaAgentError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("memory route %s failed", request.url.path)
            return JSONResponse(
                {"error": "InternalError", "detail": "the server failed; see its log"}, status_code=500
            )

    endpoint.__name__ = handler.__name__
    return endpoint


# --- memory routes -----------------------------------------------------------------------------
def _persona_json(persona: Any) -> dict[str, Any]:
    data: dict[str, Any] = persona.model_dump(mode="json")
    data["verified_reasoning"] = sum(1 for item in persona.reasoning if item.verified)
    return data


async def get_persona(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return the user's current persona and every version, oldest first."""

    def read() -> dict[str, Any]:
        store = resources.store
        current = store.current_persona(user_id)
        history = store.persona_history(user_id)
        return {
            "user_id": user_id,
            "pair_count": store.count_pairs(user_id),
            "current_version": current.version if current else None,
            "current": _persona_json(current) if current else None,
            "history": [_persona_json(persona) for persona in history],
            "start": start.to_json() if (start := store.starting_choice(user_id)) else None,
        }

    return JSONResponse(await asyncio.to_thread(read))


async def get_learnt(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return what was learnt: the preference statements, with pairs behind each, and the judge agreement."""
    from persona_agent.learnt import learnt

    def read() -> dict[str, Any]:
        store = resources.store
        max_pairs = resources.settings.max_pairs_per_synthesis
        persona = store.current_persona(user_id)
        view = learnt(store, user_id, persona, lambda: resources.offline_parts, max_pairs=max_pairs)
        return {"user_id": user_id, **view.to_json()}

    return JSONResponse(await asyncio.to_thread(read))


async def list_pairs(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return a page of the user's pairs, newest first, with what the default judge made of each."""
    offset = _int_param(request, "offset", 0, low=0, high=10**9)
    limit = _int_param(request, "limit", 50, low=1, high=MAX_PAGE)
    source = request.query_params.get("source") or None
    if source is not None and source not in PAIR_SOURCES:
        raise InvalidPreference(f"source: must be one of {', '.join(PAIR_SOURCES)}, got {source[:20]!r}")

    def read() -> dict[str, Any]:
        store = resources.store
        page = store.list_pairs(user_id, offset=offset, limit=limit + 1, source=source)
        notes = store.annotations(user_id)
        pairs = []
        for pair in page[:limit]:
            note = notes.get(pair.id, {})
            pairs.append(
                {
                    **pair.model_dump(mode="json"),
                    "weight": pair.weight,
                    "inferred": pair.inferred,
                    "default_judge_correct": note.get("default_judge_correct"),
                    "has_verified_reasoning": bool(note.get("has_verified_reasoning")),
                    "reasoning": note.get("reasoning"),
                }
            )
        return {
            "user_id": user_id,
            "total": store.count_pairs(user_id),
            "offset": offset,
            "limit": limit,
            "source": source,
            "sources": list(PAIR_SOURCES),
            "has_more": len(page) > limit,
            "pairs": pairs,
        }

    return JSONResponse(await asyncio.to_thread(read))


async def retrieve_demos(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return the demos the judge would see for a question, each with why it was picked."""
    query = (request.query_params.get("q") or "").strip()
    if not query:
        raise InvalidPreference("q: give the question to retrieve demos for")
    options = resources.options  # retrieval weighs the pairs as in a chat turn
    k = _int_param(request, "k", max(options.demo_k, 1), low=1, high=MAX_DEMOS)

    def read() -> dict[str, Any]:
        demos = resources.store.retrieve_demos(
            user_id,
            query,
            k,
            similarity_weight=options.similarity_weight,
            informativeness_weight=options.informativeness_weight,
            mmr_lambda=options.mmr_lambda,
        )
        return {
            "user_id": user_id,
            "query": query,
            "k": k,
            "demos": [d.model_dump(mode="json") for d in demos],
        }

    return JSONResponse(await asyncio.to_thread(read))


def _import_text(body: bytes) -> str:
    """Return JSONL from a body holding JSONL, one JSON object or a JSON array of records."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPreference("body: must be UTF-8 text (JSONL or a JSON array)") from None
    stripped = text.strip()
    if not stripped:
        raise InvalidPreference("body: empty; send JSONL or a JSON array of preference records")
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidPreference(
                f"body: not a valid JSON array ({exc.msg} at line {exc.lineno})"
            ) from None
        except RecursionError:  # a nesting bomb must be refused like any other bad body, not a 500
            raise InvalidPreference("body: the JSON array is nested too deeply") from None
        if not records:
            raise InvalidPreference("body: the JSON array holds no records")
        return "\n".join(json.dumps(record, ensure_ascii=False) for record in records) + "\n"
    return text


async def import_pairs(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Import preference records (JSONL or a JSON array) for the caller; all are validated first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_IMPORT_BYTES:
        return _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_IMPORT_BYTES:
            return _too_large()
    text = _import_text(bytes(body))

    def write() -> dict[str, Any]:
        store = resources.store
        # The caller owns whatever they import: user ids inside the records are not trusted.
        added = store.import_user(text, user_id=user_id)
        return {"user_id": user_id, "imported": added, "total_pairs": store.count_pairs(user_id)}

    return JSONResponse(await asyncio.to_thread(write), status_code=201)


def _too_large() -> JSONResponse:
    return JSONResponse(
        {"error": "PayloadTooLarge", "detail": f"the body is over {MAX_IMPORT_BYTES} bytes"}, status_code=413
    )


async def export_memory(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return everything stored about the caller as JSONL."""
    text = await asyncio.to_thread(resources.store.export_user, user_id)
    return PlainTextResponse(
        text,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{user_id}.jsonl"'},
    )


async def forget_me(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Delete everything stored about the caller."""
    deleted = await asyncio.to_thread(resources.store.delete_user, user_id)
    return JSONResponse({"user_id": user_id, "deleted": deleted})


async def _json_object(request: Request, problem: str) -> dict[str, Any]:
    """Return the request's JSON body when it is an object; otherwise `problem` as `InvalidPreference`."""
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidPreference(problem) from None
    if not isinstance(payload, dict):
        raise InvalidPreference(problem)
    return payload


async def rollback_persona(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Make an earlier persona version current again."""
    payload = await _json_object(request, 'body: must be JSON like {"version": 2}')
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidPreference('version: must be a positive integer, as in {"version": 2}')
    persona = await asyncio.to_thread(resources.store.rollback, user_id, version)
    return JSONResponse(
        {"user_id": user_id, "current_version": persona.version, "current": _persona_json(persona)}
    )


async def list_statements(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return the current persona's statements, numbered, and the user's pinned, added and removed ones."""

    def read() -> dict[str, Any]:
        store = resources.store
        return {
            "user_id": user_id,
            "statements": [
                item.model_dump(mode="json", exclude={"statement"})
                for item in store.listed_statements(user_id)
            ],
            "edits": [
                edit.model_dump(mode="json", exclude={"pair_ids", "statement"})
                for edit in store.statement_edits(user_id)
            ],
        }

    return JSONResponse(await asyncio.to_thread(read))


async def edit_statement(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Pin, unpin or remove a statement (by number or id), or add one: ``{"action", "statement"}``."""
    from persona_agent.own_statements import edit_statement, outcome_json

    problem = (
        'body: must be JSON like {"action": "pin", "statement": "2"} '
        'or {"action": "add", "statement": "I use metric units"}'
    )
    payload = await _json_object(request, problem)
    if not isinstance(payload.get("statement"), str):
        raise InvalidPreference(problem)
    action = str(payload.get("action", ""))
    outcome = await asyncio.to_thread(edit_statement, resources.store, user_id, action, payload["statement"])
    return JSONResponse({"user_id": user_id, **outcome_json(outcome)})


async def get_start(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return the archetypes a user may start from, their choice, whether it is offered, and the quiz."""
    from persona_agent.starting import starting_view

    first = resources.settings.first_synthesis_at
    return JSONResponse(await asyncio.to_thread(starting_view, resources.store, user_id, first))


async def choose_start(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Start the caller from an archetype: a persona at once, and an offline judge that starts there."""
    from persona_agent.starting import start_from_archetype

    payload = await _json_object(request, 'body: must be JSON like {"archetype": "concise"}')
    key = payload.get("archetype")
    if not isinstance(key, str) or not key:
        raise InvalidPreference('archetype: give an archetype key, as in {"archetype": "concise"}')
    persona, choice = await asyncio.to_thread(start_from_archetype, resources.store, user_id, key)
    return JSONResponse(
        {"user_id": user_id, "chosen": choice.to_json(), "current": _persona_json(persona)}, status_code=201
    )


# --- inspector page ----------------------------------------------------------------------------
_STATIC_FILES = {
    "inspector.html": "text/html; charset=utf-8",
    "inspector.js": "text/javascript; charset=utf-8",
    "inspector.css": "text/css; charset=utf-8",
}


async def inspector_page(request: Request) -> Response:
    """Serve the memory inspector page or one of its assets."""
    name = request.path_params.get("asset", "inspector.html")
    if name not in _STATIC_FILES:
        return JSONResponse({"error": "NotFound", "detail": f"no asset {name[:40]!r}"}, status_code=404)
    return FileResponse(
        STATIC_DIR / name,
        media_type=_STATIC_FILES[name],
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


async def learn_tastes_every(resources: ServerResources, every_s: float) -> None:
    """Learn the tastes the stored users share now and every `every_s` seconds after, until cancelled.

    A run that fails is logged and the stored record stays as it was; the next run tries again.
    """
    while True:
        try:
            tastes = await asyncio.to_thread(resources.learn_shared_tastes)
            logger.info("learnt the tastes %d users share", tastes.n_users)
        except Exception:
            logger.exception("learning the shared tastes failed; the stored ones stay until the next run")
        await asyncio.sleep(every_s)


def create_app(resources: ServerResources) -> Starlette:
    """Build the Starlette app of memory routes and the inspector over the given resources."""

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _authenticated(resources, handler), methods=[method])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Fail at start-up, not at the first request, on bad settings; no request pays for building.
        await asyncio.to_thread(resources.start)
        every_s = resources.settings.learn_tastes_every_s
        learning = asyncio.create_task(learn_tastes_every(resources, every_s)) if every_s > 0 else None
        try:
            yield
        finally:
            if learning is not None:
                learning.cancel()

    return Starlette(
        routes=[
            route("/memory/persona", get_persona, "GET"),
            route("/memory/persona/rollback", rollback_persona, "POST"),
            route("/memory/persona/statements", list_statements, "GET"),
            route("/memory/persona/statements", edit_statement, "POST"),
            route("/memory/learnt", get_learnt, "GET"),
            route("/memory/start", get_start, "GET"),
            route("/memory/start", choose_start, "POST"),
            route("/memory/pairs", list_pairs, "GET"),
            route("/memory/pairs/import", import_pairs, "POST"),
            route("/memory/demos", retrieve_demos, "GET"),
            route("/memory/export", export_memory, "GET"),
            route("/memory", forget_me, "DELETE"),
            Route("/inspector", inspector_page, methods=["GET"]),
            Route("/inspector/{asset}", inspector_page, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
