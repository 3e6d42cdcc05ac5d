"""PreferenceStore over every Chroma client kind: pairs, personas, demos, retrieval, isolation, export."""

# ruff: noqa: F811 - the fixtures imported from tests.fakes are redefined as test parameters

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from agent.errors import InvalidPreference, NotFound, UnknownUser
from agent.records import Demo, Limits, Persona, Reasoning, Turn
from memory.chroma import is_in_process, make_client
from memory.embeddings import MiniLMEmbeddings
from memory.retrieval import retrieval_text
from memory.store import PreferenceStore
from tests.fakes import (  # noqa: F401 - fixtures are found by name
    T0,
    StoreFactory,
    WordHashEmbeddings,
    chroma_server,
    client_kind,
    make_pair,
    make_store,
    store,
)


def users_with_records(store: PreferenceStore) -> list[str]:
    """Every user id the users collection holds a record of (their own record, their leases)."""
    got = store.collections["users"].get(include=["metadatas"])
    return sorted({str(metadata["user_id"]) for metadata in got["metadatas"] or [] if metadata})


def persona(user_id: str, text: str, *, minutes: int = 0, **fields: object) -> Persona:
    return Persona(user_id=user_id, text=text, created_at=T0 + timedelta(minutes=minutes), **fields)  # type: ignore[arg-type]


# --- pairs -------------------------------------------------------------------------------------
def test_add_pairs_is_idempotent_and_scoped_to_the_user(store: PreferenceStore) -> None:
    pairs = [make_pair("alice", f"question {i}", minutes=i) for i in range(3)]
    added = store.add_pairs("alice", pairs)
    assert added == [pair.id for pair in pairs]
    assert store.add_pairs("alice", [*pairs, make_pair("alice", "question 3")]) == [
        make_pair("alice", "question 3").id
    ]
    assert store.count_pairs("alice") == 4
    assert pairs[0] in store.list_pairs("alice")
    # Bob never sees Alice's pairs, even by id.
    assert store.count_pairs("bob") == 0
    assert store.list_pairs("bob") == []
    with pytest.raises(NotFound):
        store.delete_pair("bob", pairs[0].id)
    assert store.count_pairs("alice") == 4


def test_same_pair_for_two_users_is_stored_twice(store: PreferenceStore) -> None:
    alice, bob = make_pair("alice", "same question"), make_pair("bob", "same question")
    assert alice.id == bob.id  # content hash: the users' records must still not collide
    store.add_pairs("alice", [alice])
    assert store.add_pairs("bob", [bob]) == [bob.id]
    store.delete_pair("bob", bob.id)
    assert store.list_pairs("alice") == [alice] and store.list_pairs("bob") == []


def test_a_bad_pair_rejects_the_whole_batch(store: PreferenceStore) -> None:
    good = make_pair("alice", "fine question")
    with pytest.raises(InvalidPreference, match="pair 2: belongs to user 'bob'"):
        store.add_pairs("alice", [good, make_pair("bob", "other question")])
    too_long = make_pair("alice", "long", chosen="x" * 6_000)  # store limit is 5,000 characters
    with pytest.raises(InvalidPreference, match=r"pair 2: chosen: .*over the limit of 5000"):
        store.add_pairs("alice", [good, too_long])
    assert store.count_pairs("alice") == 0
    with pytest.raises(InvalidPreference, match="user_id"):
        store.count_pairs("alice/../bob")


def test_list_pairs_pages_newest_first_and_filters_by_source(store: PreferenceStore) -> None:
    pairs = [
        make_pair("alice", f"q{i}", minutes=i, source="implicit" if i % 2 else "explicit") for i in range(7)
    ]
    store.add_pairs("alice", pairs)
    store.add_pairs("bob", [make_pair("bob", "bob's question", minutes=100)])
    newest = [pair.id for pair in reversed(pairs)]
    assert [p.id for p in store.list_pairs("alice")] == newest
    assert [p.id for p in store.list_pairs("alice", offset=2, limit=3)] == newest[2:5]
    assert [p.id for p in store.newest_pairs("alice", 2)] == newest[:2]
    assert {p.source for p in store.list_pairs("alice", source="implicit")} == {"implicit"}
    assert len(store.list_pairs("alice", source="implicit")) == 3
    assert all(p.user_id == "alice" for p in store.list_pairs("alice", limit=100))
    assert [p.user_id for p in store.list_pairs("bob")] == ["bob"]


def test_delete_pair_and_bob_cannot_delete_alices(store: PreferenceStore) -> None:
    pair = make_pair("alice", "keep me")
    store.add_pairs("alice", [pair])
    with pytest.raises(NotFound):
        store.delete_pair("bob", pair.id)
    assert store.count_pairs("alice") == 1
    store.delete_pair("alice", pair.id)
    assert store.count_pairs("alice") == 0
    with pytest.raises(NotFound):
        store.delete_pair("alice", pair.id)


def test_annotations_are_stored_and_bob_cannot_annotate_alices(store: PreferenceStore) -> None:
    first, second = make_pair("alice", "one"), make_pair("alice", "two")
    store.add_pairs("alice", [first, second])
    store.annotate_pairs(
        "alice", {first.id: {"default_judge_correct": False, "has_verified_reasoning": True}}
    )
    assert store.annotations("alice")[first.id] == {
        "default_judge_correct": False,
        "has_verified_reasoning": True,
    }
    assert store.annotations("alice")[second.id] == {"has_verified_reasoning": False}
    store.annotate_pairs("alice", {first.id: {"default_judge_correct": None}})
    assert "default_judge_correct" not in store.annotations("alice")[first.id]
    with pytest.raises(NotFound):
        store.annotate_pairs("bob", {first.id: {"has_verified_reasoning": False}})
    assert store.annotations("alice")[first.id]["has_verified_reasoning"] is True
    assert store.annotations("bob") == {}
    with pytest.raises(InvalidPreference, match="unknown annotation keys"):
        store.annotate_pairs("alice", {first.id: {"score": 3}})


# --- personas ----------------------------------------------------------------------------------
def test_persona_versions_history_and_rollback(store: PreferenceStore) -> None:
    assert store.current_persona("alice") is None
    pair = make_pair("alice", "demo question")
    store.add_pairs("alice", [pair])
    saved = [
        store.save_persona(
            persona(
                "alice",
                f"Alice likes lists, v{i}",
                minutes=i,
                model="m",
                pair_ids=(pair.id,),
                val_accuracy=0.5 + i / 10,
            ),
            [Demo(pair=pair, reasoning=f"why {i}")],
        )
        for i in range(1, 4)
    ]
    assert [p.version for p in saved] == [1, 2, 3]
    assert store.current_persona("alice") == saved[2]
    assert [p.text for p in store.persona_history("alice")] == [
        "Alice likes lists, v1",
        "Alice likes lists, v2",
        "Alice likes lists, v3",
    ]
    assert store.get_persona("alice", 2).val_accuracy == pytest.approx(0.7)
    assert store.current_demos("alice")[0].reasoning == "why 3"

    assert store.rollback("alice", 1).text == "Alice likes lists, v1"
    assert store.current_persona("alice") == saved[0]
    assert store.current_demos("alice")[0].reasoning == "why 1"
    assert len(store.persona_history("alice")) == 3
    assert store.save_persona(persona("alice", "Alice likes lists, v4"), []).version == 4
    assert store.current_demos("alice") == []

    # Bob sees none of it and cannot move Alice's pointer.
    assert store.current_persona("bob") is None
    assert store.persona_history("bob") == []
    assert store.current_demos("bob") == []
    with pytest.raises(NotFound):
        store.get_persona("bob", 1)
    with pytest.raises(NotFound):
        store.rollback("bob", 2)
    assert store.current_persona("alice").version == 4  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.rollback("alice", 9)


def test_persona_provenance_round_trips(store: PreferenceStore) -> None:
    reasoning = (Reasoning(pair_id="p1", text="she likes lists", predicted="chosen"),)
    original = persona(
        "alice", "Likes bullet lists.", model="smol", pair_ids=("p1", "p2"), demo_pair_ids=("p1",),
        val_accuracy=0.75, baseline_val_accuracy=0.5, reasoning=reasoning,
    )  # fmt: skip
    stored = store.save_persona(original, [])
    assert stored == original.model_copy(update={"version": 1})
    assert store.get_persona("alice", 1) == stored


def test_demos_of_another_user_are_refused(store: PreferenceStore) -> None:
    with pytest.raises(InvalidPreference, match="belongs to 'bob'"):
        store.save_persona(persona("alice", "Likes short replies."), [Demo(pair=make_pair("bob", "q"))])
    assert store.persona_history("alice") == []


def test_pairs_since_persona(store: PreferenceStore) -> None:
    old = [make_pair("alice", f"old {i}", minutes=i) for i in range(3)]
    store.add_pairs("alice", old)
    assert store.pair_counts("alice").since_persona == len(old)
    store.save_persona(persona("alice", "Likes short replies.", minutes=10), [])
    assert store.pair_counts("alice").since_persona == 0
    new = [make_pair("alice", f"new {i}", minutes=11 + i) for i in range(2)]
    store.add_pairs("alice", new)
    counts = store.pair_counts("alice")
    assert (counts.total, counts.since_persona) == (5, len(new))
    assert (store.pair_counts("bob").total, store.pair_counts("bob").since_persona) == (0, 0)


def test_a_half_written_version_stays_invisible_and_is_cleaned_up(make_store: StoreFactory) -> None:
    store = make_store(stale_write_s=3600)
    pair = make_pair("alice", "q")
    store.add_pairs("alice", [pair])
    store.save_persona(persona("alice", "Likes lists, v1"), [Demo(pair=pair, reasoning="v1 demo")])
    # A writer claims v2 and writes a demo, then dies before marking the version complete.
    scope = store._scope("alice")
    assert store._claim_version(scope) == 2
    store._demos.add(
        ids=[scope.record_id("v0000000002", "d0000")],
        embeddings=[[1.0]],
        documents=[Demo(pair=pair, reasoning="orphan").model_dump_json()],
        metadatas=[{"user_id": "alice", "version": 2, "position": 0}],
    )
    assert store.current_persona("alice").text == "Likes lists, v1"  # type: ignore[union-attr]
    assert [p.version for p in store.persona_history("alice")] == [1]
    assert [d.reasoning for d in store.current_demos("alice")] == ["v1 demo"]
    with pytest.raises(NotFound):
        store.get_persona("alice", 2)
    # A recent claim may still be in progress elsewhere: the next write skips its number.
    assert store.save_persona(persona("alice", "Likes lists, v3"), []).version == 3
    # Once stale, the claim and its demos are deleted; version numbers keep increasing.
    store.stale_write_s = 0
    saved = store.save_persona(persona("alice", "Likes lists, v4"), [Demo(pair=pair, reasoning="fresh")])
    assert saved.version == 4
    assert [p.version for p in store.persona_history("alice")] == [1, 3, 4]
    assert store._personas.get(ids=["alice/v0000000002"])["ids"] == []
    demo_docs = store._demos.get(where={"user_id": "alice"})["documents"]
    assert not any("orphan" in doc for doc in demo_docs)
    assert [d.reasoning for d in store.current_demos("alice")] == ["fresh"]


def test_one_lease_holder_at_a_time_and_alices_lease_never_blocks_bob(make_store: StoreFactory) -> None:
    store, other_process = make_store(), make_store()
    held = store.acquire_lease("alice")
    assert held is not None
    assert other_process.acquire_lease("alice") is None  # held: the second synthesis must wait
    bob = other_process.acquire_lease("bob")
    assert bob is not None and bob.user_id == "bob"
    assert other_process.renew_lease(held)  # any store object renews the holder's lease
    store.release_lease(held)
    assert not store.renew_lease(held)  # released: gone
    taken = other_process.acquire_lease("alice")
    assert taken is not None and taken.number > held.number
    store.release_lease(held)  # an old holder releasing again changes nothing
    assert store.acquire_lease("alice") is None
    assert users_with_records(store) == ["alice", "bob"]


def test_a_crashed_holders_lease_expires_and_it_cannot_renew_after_a_takeover(
    make_store: StoreFactory,
) -> None:
    crashed, successor = make_store(lease_s=0.2), make_store(lease_s=0.2)
    held = crashed.acquire_lease("alice")
    assert held is not None
    time.sleep(0.1)
    assert crashed.renew_lease(held) and successor.acquire_lease("alice") is None  # renewed: held
    time.sleep(0.3)  # the holder died without releasing or renewing; its lease runs out
    taken = successor.acquire_lease("alice")
    assert taken is not None
    assert not crashed.renew_lease(held)  # it may not resume as if it still held the lease
    assert successor.renew_lease(taken)
    assert crashed.acquire_lease("alice") is None


def test_deleting_a_user_removes_their_leases(store: PreferenceStore) -> None:
    store.add_pairs("alice", [make_pair("alice", "q")])
    held = store.acquire_lease("alice")
    assert held is not None
    store.delete_user("alice")
    assert users_with_records(store) == []
    assert store.acquire_lease("alice") is not None


# --- retrieval ---------------------------------------------------------------------------------
def test_retrieval_text_puts_the_last_user_message_first() -> None:
    context = (
        Turn(role="user", content="Tell me about Rome."),
        Turn(role="assistant", content="Rome is the capital of Italy. " * 30),
        Turn(role="user", content="Make it shorter"),
    )
    text = retrieval_text(context)
    assert text.startswith("Make it shorter\n")
    assert text.endswith("capital of Italy.")
    assert len(text) <= len("Make it shorter\n") + 300
    # A question that stands on its own is embedded alone.
    question = (
        "How do the ancient Roman aqueducts compare with modern water systems "
        "in cost and in how long they last?"
    )
    assert retrieval_text((*context[:2], Turn(role="user", content=question))) == question


def test_retrieve_ranks_by_similarity_and_never_crosses_users(store: PreferenceStore) -> None:
    topics = [
        "cooking pasta with garlic",
        "training for a marathon",
        "python list comprehension",
        "tax forms",
    ]
    alice = [make_pair("alice", f"How do I go about {topic}?", minutes=i) for i, topic in enumerate(topics)]
    store.add_pairs("alice", alice)
    store.add_pairs("bob", [make_pair("bob", "How do I go about cooking pasta with garlic and oil?")])
    demos = store.retrieve_demos("alice", "cooking pasta with garlic tonight", k=2)
    assert demos[0].pair.id == alice[0].id
    assert all(d.pair.user_id == "alice" for d in demos)
    assert demos[0].similarity is not None and demos[0].similarity > demos[1].similarity  # type: ignore[operator]
    assert "similarity" in demos[0].why
    bob_demos = store.retrieve_demos("bob", "cooking pasta with garlic tonight", k=5)
    assert [d.pair.user_id for d in bob_demos] == ["bob"]
    assert store.retrieve_demos("carol", "cooking pasta", k=3) == []


def test_retrieve_returns_all_when_fewer_than_k(store: PreferenceStore) -> None:
    store.add_pairs("alice", [make_pair("alice", "one thing"), make_pair("alice", "another thing")])
    assert len(store.retrieve_demos("alice", [Turn(role="user", content="thing")], k=5)) == 2
    assert store.retrieve_demos("alice", "thing", k=0) == []


def test_informativeness_lifts_a_pair_the_default_judge_got_wrong(store: PreferenceStore) -> None:
    close = make_pair("alice", "best hiking boots for rain")
    hard = make_pair("alice", "best hiking boots for snow and ice")
    store.add_pairs("alice", [close, hard])
    query = "best hiking boots for rain"
    assert store.retrieve_demos("alice", query, k=1)[0].pair.id == close.id
    store.annotate_pairs(
        "alice",
        {
            hard.id: {
                "default_judge_correct": False,
                "has_verified_reasoning": True,
                "reasoning": "needs grip",
            }
        },
    )
    top = store.retrieve_demos("alice", query, k=1, informativeness_weight=1.0)[0]
    assert top.pair.id == hard.id
    assert top.informativeness == 1.0
    assert top.reasoning == "needs grip"
    assert "default judge got it wrong" in top.why and "verified reasoning" in top.why
    assert top.score == pytest.approx(top.similarity + 1.0)  # type: ignore[operator]
    # With no weight on informativeness, similarity alone decides again.
    assert store.retrieve_demos("alice", query, k=1, informativeness_weight=0.0)[0].pair.id == close.id


def test_mmr_prefers_a_different_demo_over_a_near_duplicate(store: PreferenceStore) -> None:
    first = make_pair("alice", "python sorting lists quickly")
    twin = make_pair("alice", "python sorting lists quickly please")
    other = make_pair("alice", "python web server setup")
    store.add_pairs("alice", [first, twin, other])
    query = "python sorting lists"
    by_relevance = store.retrieve_demos("alice", query, k=2, mmr_lambda=1.0)
    assert [d.pair.id for d in by_relevance] == [first.id, twin.id]
    diverse = store.retrieve_demos("alice", query, k=2, mmr_lambda=0.3)
    assert [d.pair.id for d in diverse] == [first.id, other.id]
    assert "closest earlier demo" in diverse[1].why


def test_retrieval_with_real_minilm(make_store: StoreFactory) -> None:
    store = make_store(MiniLMEmbeddings())
    questions = {
        "pasta": "What is a good recipe for a quick weeknight pasta dinner?",
        "run": "How should I train for my first marathon?",
        "tax": "How do I file my income tax return as a freelancer?",
        "code": "How can I reverse a linked list in Python?",
    }
    pairs = {key: make_pair("alice", text) for key, text in questions.items()}
    store.add_pairs("alice", list(pairs.values()))
    store.add_pairs("bob", [make_pair("bob", "Give me an easy spaghetti recipe for tonight.")])
    demos = store.retrieve_demos("alice", "Any easy spaghetti recipes for tonight?", k=2)
    assert demos[0].pair.id == pairs["pasta"].id
    assert demos[0].similarity > 0.5  # type: ignore[operator]
    assert all(d.pair.user_id == "alice" for d in demos)
    assert store.retrieve_demos("alice", "jogging plan for 42 km", k=1)[0].pair.id == pairs["run"].id


def test_retrieval_sees_every_change_made_through_another_store(make_store: StoreFactory) -> None:
    """Each store keeps an in-process copy of a user's vectors; a write elsewhere must invalidate it."""
    here, elsewhere = make_store(), make_store()
    rain = make_pair("alice", "best hiking boots for rain")
    here.add_pairs("alice", [rain])
    assert [d.pair.id for d in here.retrieve_demos("alice", "boots for snow", k=3)] == [rain.id]
    snow = make_pair("alice", "best hiking boots for snow")
    elsewhere.add_pairs("alice", [snow])
    assert here.retrieve_demos("alice", "boots for snow", k=3)[0].pair.id == snow.id
    elsewhere.annotate_pairs("alice", {rain.id: {"default_judge_correct": False}})
    top = here.retrieve_demos("alice", "boots for snow", k=1, informativeness_weight=5.0)[0]
    assert top.pair.id == rain.id and top.informativeness == 0.5
    elsewhere.delete_pair("alice", rain.id)
    assert [d.pair.id for d in here.retrieve_demos("alice", "boots for rain", k=3)] == [snow.id]
    elsewhere.delete_user("alice")
    assert here.retrieve_demos("alice", "boots for rain", k=3) == []
    assert here.retrieve_demos("bob", "boots for rain", k=3) == []


def test_own_writes_keep_retrieval_current(store: PreferenceStore) -> None:
    first = make_pair("alice", "python sorting lists")
    store.add_pairs("alice", [first])
    assert len(store.retrieve_demos("alice", "sorting", k=5)) == 1
    more = [make_pair("alice", f"python sorting question {i}") for i in range(3)]
    store.add_pairs("alice", more)
    assert {d.pair.id for d in store.retrieve_demos("alice", "sorting", k=5)} == {first.id} | {
        p.id for p in more
    }
    store.delete_pair("alice", first.id)
    assert first.id not in {d.pair.id for d in store.retrieve_demos("alice", "sorting", k=5)}
    assert store.retrieve_demos("bob", "sorting", k=5) == []


# --- users, deletion, export -------------------------------------------------------------------
def _fill(store: PreferenceStore, user_id: str) -> list[str]:
    pairs = [make_pair(user_id, f"{user_id} question {i}", minutes=i) for i in range(4)]
    store.add_pairs(user_id, pairs)
    store.annotate_pairs(
        user_id, {pairs[0].id: {"default_judge_correct": False, "has_verified_reasoning": True}}
    )
    store.save_persona(
        persona(user_id, f"{user_id} likes lists, v1"), [Demo(pair=pairs[0], reasoning="r1", why="w")]
    )
    store.save_persona(
        persona(user_id, f"{user_id} likes lists, v2", minutes=5), [Demo(pair=pairs[1]), Demo(pair=pairs[2])]
    )
    store.rollback(user_id, 1)
    return [pair.id for pair in pairs]


def test_delete_user_removes_everything_and_only_theirs(store: PreferenceStore) -> None:
    _fill(store, "alice")
    _fill(store, "bob")
    assert users_with_records(store) == ["alice", "bob"]
    counts = store.delete_user("alice")
    assert counts == {"pairs": 4, "personas": 2, "demos": 3, "users": 1, "edits": 0}
    for name, collection in store.collections.items():
        records = collection.get(include=["metadatas", "documents"])
        assert not any(record_id.startswith("alice/") for record_id in records["ids"]), name
        assert not any(meta.get("user_id") == "alice" for meta in records["metadatas"]), name
        assert not any('"alice"' in (doc or "") for doc in records["documents"]), name
    assert users_with_records(store) == ["bob"]
    assert store.count_pairs("bob") == 4 and len(store.persona_history("bob")) == 2
    assert store.delete_user("alice") == {"pairs": 0, "personas": 0, "demos": 0, "users": 0, "edits": 0}


def test_export_import_round_trip(make_store: StoreFactory) -> None:
    source = make_store()
    _fill(source, "alice")
    _fill(source, "bob")
    exported = source.export_user("alice")
    lines = [json.loads(line) for line in exported.splitlines()]
    assert all(line.get("user_id") == "alice" for line in lines if "kind" not in line)
    assert [line["persona"]["version"] for line in lines if line.get("kind") == "persona"] == [1, 2]
    assert not any("bob" in line for line in exported.splitlines())
    with pytest.raises(UnknownUser):
        source.export_user("carol")

    source.import_user(exported, user_id="carol")
    assert [p.id for p in source.list_pairs("carol")] == [p.id for p in source.list_pairs("alice")]
    assert [p.context for p in source.list_pairs("carol")] == [p.context for p in source.list_pairs("alice")]
    assert source.annotations("carol") == source.annotations("alice")
    carol_history, alice_history = source.persona_history("carol"), source.persona_history("alice")
    assert [(p.version, p.text, p.created_at) for p in carol_history] == [
        (p.version, p.text, p.created_at) for p in alice_history
    ]
    assert source.current_persona("carol").version == 1  # type: ignore[union-attr]
    assert [d.reasoning for d in source.current_demos("carol")] == ["r1"]
    assert all(d.pair.user_id == "carol" for d in source.current_demos("carol"))
    # Re-importing the same export adds nothing.
    assert source.import_user(exported, user_id="carol") == {"pairs": 0, "personas": 0}
    # Exporting Carol gives Alice's export with the owner renamed.
    assert source.export_user("carol").replace('"carol"', '"alice"') == exported


def test_import_validates_everything_before_writing(store: PreferenceStore) -> None:
    good = json.dumps(
        {"user_id": "alice", "context": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"}
    )
    bad = json.dumps(
        {"user_id": "alice", "context": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "a"}
    )
    with pytest.raises(InvalidPreference, match="record 2"):
        store.import_user(f"{good}\n{bad}\n")
    assert store.count_pairs("alice") == 0
    other = good.replace('"alice"', '"bob"')
    with pytest.raises(InvalidPreference, match="exactly one user"):
        store.import_user(f"{good}\n{other}\n")
    assert store.import_user(f"{good}\n{other}\n", user_id="dave") == {"pairs": 1, "personas": 0}


def test_imports_real_personal_reward_bench_pairs(store: PreferenceStore) -> None:
    from tests.conftest import PRISM

    records = [json.loads(line) for line in PRISM.read_text().splitlines()]
    user = records[0]["user_id"]
    text = "".join(json.dumps(r) + "\n" for r in records if r["user_id"] == user)
    result = store.import_user(text)
    assert result["pairs"] == store.count_pairs(user) > 0
    assert all(p.source == "import" for p in store.list_pairs(user))


# --- concurrency and persistence ---------------------------------------------------------------
def test_threads_lose_no_pairs_and_versions_stay_unique(store: PreferenceStore) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for batch in range(5):
                store.add_pairs(
                    "alice", [make_pair("alice", f"w{worker} b{batch} q{i}", minutes=i) for i in range(5)]
                )
                store.save_persona(persona("alice", f"Likes lists, w{worker} b{batch}"), [])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count_pairs("alice") == 6 * 5 * 5
    versions = [p.version for p in store.persona_history("alice")]
    assert versions == list(range(1, 31))
    assert len({p.text for p in store.persona_history("alice")}) == 30


def test_persistent_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = PreferenceStore(make_client(path=path), WordHashEmbeddings(), limits=Limits())
    ids = _fill(first, "alice")
    del first
    reopened = PreferenceStore(make_client(path=path), WordHashEmbeddings())
    assert sorted(p.id for p in reopened.list_pairs("alice")) == sorted(ids)
    assert reopened.current_persona("alice").text == "alice likes lists, v1"  # type: ignore[union-attr]
    assert reopened.retrieve_demos("alice", "alice question 2", k=1)[0].pair.id == ids[2]
    assert reopened.count_pairs("bob") == 0


def test_embedding_cache_embeds_a_repeated_context_once(make_store: StoreFactory) -> None:
    model = WordHashEmbeddings()
    store = make_store(model)
    # Three candidates of one turn: two pairs share the context.
    pairs = [make_pair("alice", "same turn", chosen="best", rejected=other) for other in ("worse", "worst")]
    store.add_pairs("alice", pairs)
    store.retrieve_demos("alice", "same turn", k=1)
    assert model.texts == 1
    assert store.embeddings.hits == 2


def test_pair_counts_follow_writes_and_the_current_persona(make_store: StoreFactory) -> None:
    here, elsewhere = make_store(), make_store()
    assert here.pair_counts("alice").total == 0
    here.add_pairs("alice", [make_pair("alice", f"question {i}", minutes=i) for i in range(3)])
    counts = here.pair_counts("alice")
    assert (counts.total, counts.since_persona, counts.persona) == (3, 3, None)
    saved = here.save_persona(persona("alice", "likes bullet lists", minutes=1))
    here.add_pairs("alice", [make_pair("alice", "question 9", minutes=9)])
    elsewhere.add_pairs("alice", [make_pair("alice", "question 8", minutes=8)])
    counts = here.pair_counts("alice")
    assert (counts.total, counts.since_persona, counts.persona) == (5, 3, saved)
    assert here.pair_counts("bob").total == 0


def test_only_chroma_inside_this_process_counts_as_in_process(
    client_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A store over a server keeps pairs revisions in Chroma, where other processes' writes renew them."""
    from chromadb.config import Settings

    if client_kind == "http":
        client = make_client(server=request.getfixturevalue("chroma_server").address)
    else:
        client = make_client(ephemeral=True) if client_kind == "ephemeral" else make_client(path=tmp_path)
    assert is_in_process(client) is (client_kind != "http")

    class UnknownClient:  # an implementation this chromadb does not name counts as a server
        def get_settings(self) -> Settings:
            return Settings(chroma_api_impl="chromadb.api.future.API")

    assert is_in_process(UnknownClient()) is False  # type: ignore[arg-type]


def test_a_read_that_races_a_chroma_servers_first_writes_is_retried() -> None:
    from chromadb.errors import InternalError

    from memory.chroma import read_retrying

    answers: list[object] = [
        InternalError("Error executing plan: Error creating hnsw segment reader: Nothing found on disk"),
        {"ids": ["a"]},
    ]

    def read() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert read_retrying(read, pause_s=0.0) == {"ids": ["a"]}
    with pytest.raises(InternalError, match="something else"):
        read_retrying(lambda: (_ for _ in ()).throw(InternalError("something else")), pause_s=0.0)
    always: list[int] = []

    def never_ready() -> object:
        always.append(1)
        raise InternalError("Nothing found on disk")

    with pytest.raises(InternalError):
        read_retrying(never_ready, attempts=3, pause_s=0.0)
    assert len(always) == 3
