"""The server's memory routes and token auth, through Starlette's TestClient over an in-memory store."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from starlette.testclient import TestClient

from agent.errors import ConfigurationError
from agent.records import PairSource, Persona, Reasoning
from agent.shared_tastes import SharedTastes
from memory.chroma import make_client
from memory.store import PreferenceStore
from persona_agent.server import routes
from persona_agent.server.resources import ServerResources
from persona_agent.server.routes import create_app
from persona_agent.server.tokens import TokenMap, Unauthenticated, load_token_map, parse_token_list
from persona_agent.settings import Settings
from tests.fakes import WordHashEmbeddings, make_pair

ALICE = {"Authorization": "Bearer alice-secret-token"}
BOB = {"Authorization": "Bearer bob-secret-token"}
TOKENS = "alice-secret-token=alice,bob-secret-token=bob"


@pytest.fixture
def store() -> PreferenceStore:
    """A fresh store over in-memory Chroma with the word-hash embedder."""
    return PreferenceStore(
        make_client(ephemeral=True), WordHashEmbeddings(), prefix=f"srv{uuid.uuid4().hex[:10]}"
    )


def _resources(store: PreferenceStore, **settings: object) -> ServerResources:
    values: dict[str, object] = {"tokens": TOKENS, **settings}
    return ServerResources(
        settings_factory=lambda: Settings(**values),  # type: ignore[arg-type]
        store_factory=lambda _settings: store,
    )


@pytest.fixture
def client(store: PreferenceStore) -> Iterator[TestClient]:
    """A client of the memory app, started with its lifespan."""
    with TestClient(create_app(_resources(store))) as test_client:
        yield test_client


def _fill(store: PreferenceStore, user_id: str, n: int, *, source: str = "explicit") -> list[str]:
    pairs = [
        make_pair(
            user_id,
            f"{user_id} {source} question {i} about pasta",
            chosen=f"answer {i}",
            minutes=i,
            source=source,
        )
        for i in range(n)
    ]
    return store.add_pairs(user_id, pairs)


# --- auth ------------------------------------------------------------------------------------
ROUTES = [
    ("GET", "/memory/persona"),
    ("GET", "/memory/learnt"),
    ("GET", "/memory/pairs"),
    ("GET", "/memory/demos?q=pasta"),
    ("GET", "/memory/export"),
    ("DELETE", "/memory"),
    ("POST", "/memory/persona/rollback"),
    ("POST", "/memory/pairs/import"),
    ("GET", "/memory/start"),
    ("POST", "/memory/start"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-123"},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer "},
    ],
)
def test_memory_routes_refuse_a_missing_or_wrong_token(
    client: TestClient, store: PreferenceStore, method: str, path: str, headers: dict[str, str]
) -> None:
    _fill(store, "alice", 2)
    response = client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "Unauthenticated"
    assert store.count_pairs("alice") == 2  # a refused DELETE deleted nothing


def test_token_list_and_file_merge_and_dev_mode_is_opt_in(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({"file-token-9999": "carol"}))
    tokens = load_token_map(Settings(tokens=TOKENS, tokens_file=tokens_file))  # type: ignore[call-arg]
    assert tokens.authenticate("Bearer alice-secret-token") == "alice"
    assert tokens.authenticate("bearer file-token-9999") == "carol"
    with pytest.raises(Unauthenticated):
        tokens.authenticate("Bearer dev-alice")
    dev = load_token_map(Settings(auth="dev"))  # type: ignore[call-arg]
    assert dev.authenticate("Bearer dev-alice") == "alice"
    with pytest.raises(Unauthenticated):
        dev.authenticate("Bearer dev-al/ice")  # not a valid user id
    assert not TokenMap().configured


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("short=alice", "at least 8"),
        ("long-enough-token", "token=user_id"),
        ("long-enough-token=al/ice", "user id"),
    ],
)
def test_bad_token_lists_are_configuration_errors(text: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        parse_token_list(text)


def test_a_tokens_file_that_is_not_an_object_fails_at_startup(store: PreferenceStore, tmp_path: Path) -> None:
    bad = tmp_path / "tokens.json"
    bad.write_text('["alice-secret-token"]')
    app = create_app(_resources(store, tokens=None, tokens_file=bad))
    with pytest.raises(ConfigurationError, match="JSON object"), TestClient(app):
        pass


def test_dev_tokens_work_only_in_dev_mode(store: PreferenceStore) -> None:
    _fill(store, "dave", 1)
    with TestClient(create_app(_resources(store))) as strict:
        assert strict.get("/memory/pairs", headers={"Authorization": "Bearer dev-dave"}).status_code == 401
    with TestClient(create_app(_resources(store, tokens=None, auth="dev"))) as dev:
        response = dev.get("/memory/pairs", headers={"Authorization": "Bearer dev-dave"})
        assert response.status_code == 200
        assert response.json()["total"] == 1


def test_the_server_builds_its_graphs_and_loads_the_embedder_before_the_first_request(
    store: PreferenceStore,
) -> None:
    built: list[str] = []
    graph = object()

    def build_chat(resources: ServerResources) -> Any:
        built.append("chat")
        return graph

    resources = ServerResources(
        settings_factory=lambda: Settings(tokens=TOKENS, openai_base_url="http://127.0.0.1:9/v1"),  # type: ignore[call-arg]
        store_factory=lambda _settings: store,
        graph_factories={"chat": build_chat},
        build_at_start=("chat",),
    )
    embedder = store.embeddings.model
    loads = embedder.calls
    with TestClient(create_app(resources)) as client:
        assert built == ["chat"] and embedder.calls == loads + 1  # before any request
        assert client.get("/memory/pairs", headers=ALICE).status_code == 200
        assert asyncio.run(resources.agraph("chat")) is graph and built == ["chat"]  # built once


# --- persona -----------------------------------------------------------------------------------
def _persona(user_id: str, text: str, pair_ids: tuple[str, ...]) -> Persona:
    return Persona(
        user_id=user_id,
        text=text,
        model="fake",
        pair_ids=pair_ids,
        val_accuracy=0.75,
        reasoning=(Reasoning(pair_id=pair_ids[0], text="likes detail", predicted="chosen"),),
    )


def test_persona_route_shows_current_and_history_and_rollback_moves_current(
    client: TestClient, store: PreferenceStore
) -> None:
    empty = client.get("/memory/persona", headers=ALICE).json()
    assert empty == {
        "user_id": "alice",
        "pair_count": 0,
        "current_version": None,
        "current": None,
        "history": [],
        "start": None,
    }
    ids = tuple(_fill(store, "alice", 3))
    store.save_persona(_persona("alice", "Prefers short answers.", ids))
    store.save_persona(_persona("alice", "Prefers short answers with one example.", ids))
    body = client.get("/memory/persona", headers=ALICE).json()
    assert body["current_version"] == 2
    assert body["current"]["text"] == "Prefers short answers with one example."
    assert body["current"]["verified_reasoning"] == 1
    assert [p["version"] for p in body["history"]] == [1, 2]
    assert body["pair_count"] == 3

    rolled = client.post("/memory/persona/rollback", json={"version": 1}, headers=ALICE)
    assert rolled.status_code == 200
    assert rolled.json()["current"]["text"] == "Prefers short answers."
    assert client.get("/memory/persona", headers=ALICE).json()["current_version"] == 1

    missing = client.post("/memory/persona/rollback", json={"version": 9}, headers=ALICE)
    assert missing.status_code == 404
    assert "version 9" in missing.json()["detail"]
    for bad in ({"version": "2"}, {"version": 0}, {"v": 1}, [1]):
        response = client.post("/memory/persona/rollback", json=bad, headers=ALICE)
        assert response.status_code == 422, bad
    not_json = client.post("/memory/persona/rollback", content=b"{nope", headers=ALICE)
    assert not_json.status_code == 422

    # Bob sees none of it, and cannot roll Alice's persona back.
    assert client.get("/memory/persona", headers=BOB).json()["history"] == []
    assert client.post("/memory/persona/rollback", json={"version": 2}, headers=BOB).status_code == 404
    assert store.current_persona("alice").version == 1  # type: ignore[union-attr]


def test_learnt_route_shows_the_offline_personas_statements_and_the_judge_agreement(
    client: TestClient, store: PreferenceStore
) -> None:
    picks = [
        make_pair("alice", f"alice question {i}", chosen=f"answer {i}", minutes=i).model_copy(
            update={"metadata": {"judge_agreed": agreed, "persona_version": 1}}
        )
        for i, agreed in enumerate([True, True, False, True])
    ]
    ids = tuple(store.add_pairs("alice", picks))
    statement = {
        "feature": "lists",
        "direction": "more",
        "text": "favours bullet lists",
        "weight": 0.8,
        "population_weight": 0.0,
        "deviation": 0.8,
        "n_pairs": 4,
        "pairs_shown": 4,
        "probability": 0.9,
        "condition": None,
    }
    store.save_persona(
        Persona(
            user_id="alice",
            text="Measured on 4 of this user's choices:\n- favours bullet lists",
            pair_ids=ids,
            source="offline",
            statements=(statement,),
        )
    )
    body = client.get("/memory/learnt", headers=ALICE).json()
    assert body["user_id"] == "alice" and body["statements_from"] == "persona" and body["n_pairs"] == 4
    assert body["statements"] == [statement]
    assert body["judge_agreement"] == {
        "picks": 4,
        "agreed": 3,
        "rate": 0.75,
        "recent": [True, True, False, True],
    }
    # Bob has nothing stored: nothing learnt, nothing to agree with.
    assert client.get("/memory/learnt", headers=BOB).json() == {
        "user_id": "bob",
        "statements": [],
        "statements_from": "offline model",
        "n_pairs": 0,
        "judge_agreement": {"picks": 0, "agreed": 0, "rate": None, "recent": []},
    }


# --- pairs -------------------------------------------------------------------------------------
def test_pairs_route_pages_newest_first_filters_and_shows_judge_annotations(
    client: TestClient, store: PreferenceStore
) -> None:
    ids = _fill(store, "alice", 5)
    implicit = _fill(store, "alice", 1, source="implicit")
    store.annotate_pairs(
        "alice",
        {
            ids[4]: {
                "default_judge_correct": False,
                "has_verified_reasoning": True,
                "reasoning": "wants depth",
            }
        },
    )
    store.annotate_pairs("alice", {ids[3]: {"default_judge_correct": True}})
    first = client.get("/memory/pairs?limit=2", headers=ALICE).json()
    assert first["total"] == 6 and first["has_more"] is True
    # Newest first: the implicit pair (minute 0 of its batch) is older than explicit pairs 1..4.
    assert [p["id"] for p in first["pairs"]] == [ids[4], ids[3]]
    newest = first["pairs"][0]
    assert newest["default_judge_correct"] is False
    assert newest["has_verified_reasoning"] is True
    assert newest["reasoning"] == "wants depth"
    assert first["pairs"][1]["default_judge_correct"] is True
    assert first["pairs"][1]["has_verified_reasoning"] is False
    last = client.get("/memory/pairs?offset=4&limit=2", headers=ALICE).json()
    assert last["has_more"] is False and len(last["pairs"]) == 2
    assert last["pairs"][0]["default_judge_correct"] is None
    only_implicit = client.get("/memory/pairs?source=implicit", headers=ALICE).json()
    assert [p["id"] for p in only_implicit["pairs"]] == implicit
    assert client.get("/memory/pairs", headers=BOB).json()["pairs"] == []


def test_inferred_pairs_show_their_source_and_weight_and_round_trip_like_any_pair(
    client: TestClient, store: PreferenceStore
) -> None:
    by_source = {source: _fill(store, "alice", 1, source=source) for source in get_args(PairSource)}
    listed = client.get("/memory/pairs", headers=ALICE).json()
    assert listed["sources"] == list(get_args(PairSource))
    shown = {pair["source"]: (pair["weight"], pair["inferred"]) for pair in listed["pairs"]}
    assert shown == {
        "explicit": (1.0, False),
        "import": (1.0, False),
        "implicit": (0.5, True),
        "edit": (0.7, True),
        "regenerate": (0.3, True),
    }
    for source, ids in by_source.items():  # every source filters, the new ones included
        page = client.get(f"/memory/pairs?source={source}", headers=ALICE).json()
        assert [pair["id"] for pair in page["pairs"]] == ids
    exported = client.get("/memory/export", headers=ALICE).text
    sources = sorted(json.loads(line)["source"] for line in exported.splitlines())
    assert sources == sorted(get_args(PairSource))
    client.delete("/memory", headers=ALICE)
    client.post("/memory/pairs/import", content=exported, headers=ALICE)
    assert {pair.source for pair in store.list_pairs("alice")} == set(get_args(PairSource))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=999", "limit"),
        ("offset=-1", "offset"),
        ("source=x", "source"),
    ],
)
def test_bad_page_parameters_are_named_in_a_422(client: TestClient, query: str, field: str) -> None:
    response = client.get(f"/memory/pairs?{query}", headers=ALICE)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"{field}:")


# --- demos -------------------------------------------------------------------------------------
def test_demo_retrieval_explains_its_picks_and_stays_within_the_user(
    client: TestClient, store: PreferenceStore
) -> None:
    store.add_pairs(
        "alice",
        [
            make_pair("alice", "how do I boil pasta", chosen="Salt the water well."),
            make_pair("alice", "how do I fix a flat bicycle tyre", chosen="Find the hole first.", minutes=1),
        ],
    )
    store.add_pairs("bob", [make_pair("bob", "how do I boil pasta quickly", chosen="Use a kettle.")])
    body = client.get("/memory/demos?q=boil%20pasta&k=1", headers=ALICE).json()
    assert body["k"] == 1 and len(body["demos"]) == 1
    demo = body["demos"][0]
    assert demo["pair"]["chosen"] == "Salt the water well."
    assert demo["pair"]["user_id"] == "alice"
    assert "similarity" in demo["why"] and demo["similarity"] > 0.3
    both = client.get("/memory/demos?q=pasta&k=16", headers=ALICE).json()["demos"]
    assert {d["pair"]["user_id"] for d in both} == {"alice"}
    assert client.get("/memory/demos?q=%20", headers=ALICE).status_code == 422
    assert client.get("/memory/demos?q=pasta&k=17", headers=ALICE).status_code == 422
    assert client.get("/memory/demos?q=pasta", headers={"Authorization": "Bearer dev-x"}).status_code == 401


# --- import, export, forget --------------------------------------------------------------------
def _record(question: str, chosen: str, user_id: str = "someone") -> dict[str, object]:
    return {
        "user_id": user_id,
        "context": [{"role": "user", "content": question}],
        "chosen": {"role": "assistant", "content": chosen},
        "rejected": {"role": "assistant", "content": "no"},
    }


def test_import_accepts_jsonl_and_json_arrays_and_the_caller_owns_the_records(
    client: TestClient, store: PreferenceStore
) -> None:
    jsonl = "\n".join(json.dumps(_record(f"q{i}", f"yes {i}", user_id="bob")) for i in range(3))
    response = client.post("/memory/pairs/import", content=jsonl, headers=ALICE)
    assert response.status_code == 201
    assert response.json() == {"user_id": "alice", "imported": {"pairs": 3, "personas": 0}, "total_pairs": 3}
    array = json.dumps([_record("q9", "yes 9"), _record("q0", "yes 0")])
    again = client.post("/memory/pairs/import", content=array, headers=ALICE).json()
    assert again["imported"]["pairs"] == 1 and again["total_pairs"] == 4  # q0 was already there
    assert store.count_pairs("bob") == 0  # a user id inside the records is not trusted


def test_import_is_all_or_nothing_and_names_the_bad_record(
    client: TestClient, store: PreferenceStore
) -> None:
    records = [_record("q1", "yes"), _record("q2", "same"), _record("q3", "yes")]
    records[1]["rejected"] = {"role": "assistant", "content": "same"}
    response = client.post("/memory/pairs/import", content=json.dumps(records), headers=ALICE)
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidPreference"
    assert "record 2" in response.json()["detail"] and "differ" in response.json()["detail"]
    assert store.count_pairs("alice") == 0
    broken = client.post("/memory/pairs/import", content='{"context": [}\n', headers=ALICE)
    assert broken.status_code == 422 and "line 1" in broken.json()["detail"]
    assert client.post("/memory/pairs/import", content=b"  ", headers=ALICE).status_code == 422
    assert client.post("/memory/pairs/import", content=b"[]", headers=ALICE).status_code == 422
    assert client.post("/memory/pairs/import", content=b"\xff\xfe", headers=ALICE).status_code == 422


def test_import_refuses_an_oversized_body(
    client: TestClient, store: PreferenceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "MAX_IMPORT_BYTES", 100)
    response = client.post(
        "/memory/pairs/import", content=json.dumps([_record("q" * 200, "yes")]), headers=ALICE
    )
    assert response.status_code == 413
    assert store.count_pairs("alice") == 0


def test_export_forget_and_reimport_round_trip(client: TestClient, store: PreferenceStore) -> None:
    ids = _fill(store, "alice", 3)
    _fill(store, "bob", 2)
    store.annotate_pairs("alice", {ids[0]: {"default_judge_correct": False}})
    store.save_persona(_persona("alice", "Likes pasta facts.", tuple(ids)))
    exported = client.get("/memory/export", headers=ALICE)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert {line.get("user_id") for line in lines if "kind" not in line} == {"alice"}
    assert [line["persona"]["text"] for line in lines if line.get("kind") == "persona"] == [
        "Likes pasta facts."
    ]

    forgotten = client.delete("/memory", headers=ALICE).json()
    assert forgotten["deleted"]["pairs"] == 3 and forgotten["deleted"]["personas"] == 1
    assert store.count_pairs("alice") == 0 and store.count_pairs("bob") == 2
    assert client.get("/memory/export", headers=ALICE).status_code == 404

    restored = client.post("/memory/pairs/import", content=exported.text, headers=ALICE).json()
    assert restored["imported"] == {"pairs": 3, "personas": 1}
    assert sorted(p.id for p in store.list_pairs("alice")) == sorted(ids)
    assert store.annotations("alice")[ids[0]]["default_judge_correct"] is False
    assert store.current_persona("alice").text == "Likes pasta facts."  # type: ignore[union-attr]


# --- inspector ---------------------------------------------------------------------------------
def test_inspector_page_and_assets_are_served_without_a_token(client: TestClient) -> None:
    page = client.get("/inspector")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/inspector/inspector.js">' in page.text
    script = client.get("/inspector/inspector.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert "/memory/persona" in script.text and "innerHTML" not in script.text
    assert client.get("/inspector/inspector.css").status_code == 200
    assert client.get("/inspector/server.py").status_code == 404
    assert client.get("/inspector/..%2Fserver.py").status_code == 404


# --- shared tastes -------------------------------------------------------------------------------
def test_the_server_learns_the_shared_tastes_at_start_when_told_to(store: PreferenceStore) -> None:
    topics = ["eggs", "ferns", "taxes", "chess", "sourdough"]
    for user in ("alice", "bob", "carol"):
        store.add_pairs(
            user,
            [
                make_pair(
                    user,
                    f"Tell me how to get started with {topic}.",
                    chosen=f"- Read one guide on {topic}\n- Try it for ten minutes\n- Ask one expert",
                    rejected=f"Getting started with {topic} is a journey. " * 12,
                    minutes=i,
                )
                for i, topic in enumerate(topics)
            ],
        )
    assert store.shared_tastes() is None
    with TestClient(create_app(_resources(store, learn_tastes_every_s=3600))):
        deadline = time.monotonic() + 120
        while (tastes := store.shared_tastes()) is None and time.monotonic() < deadline:
            time.sleep(0.2)
    assert tastes is not None and sorted(tastes.posteriors) == ["alice", "bob", "carol"]
    assert tastes.learnt_at is not None
    # three users who all pick the listed, shorter reply share a taste for lists or for short replies
    assert {"a rule for more list lines", "a rule for less length"} & {label for label, _ in tastes.shared()}


async def test_a_failed_run_of_learning_tastes_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=routes.__name__)
    runs: list[int] = []

    class Resources:
        def learn_shared_tastes(self) -> SharedTastes:
            runs.append(len(runs))
            if len(runs) == 1:
                raise ConfigurationError("the store is unreachable")
            return SharedTastes({})

    learning = asyncio.create_task(routes.learn_tastes_every(Resources(), 0.01))  # type: ignore[arg-type]
    for _ in range(1000):
        if len(runs) >= 3:
            break
        await asyncio.sleep(0.01)
    learning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await learning
    assert len(runs) >= 3
    assert "learning the shared tastes failed" in caplog.text and "the store is unreachable" in caplog.text
    assert "learnt the tastes 0 users share" in caplog.text
