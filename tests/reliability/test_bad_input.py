"""Bad input: generated import batches through the store API, the CLI and the server route.

Every generated batch (see `tests.reliability.inputs`) goes through four surfaces:
``read_pairs`` + ``PreferenceStore.add_pairs``, ``PreferenceStore.import_user``,
``persona-agent pairs import`` (CliRunner) and ``POST /memory/pairs/import`` (TestClient). Each
surface must either reject it with a typed error that names the record and field
(`InvalidPreference`, or a 4xx JSON body) and leave the store exactly as it was, or accept it and
store every pair intact (the texts read back equal the texts sent). Surfaces must agree.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from typer.testing import CliRunner

import server
from agent.errors import InvalidPreference
from agent.formats import read_pairs
from agent.records import PreferencePair, Turn
from memory.chroma import make_client
from memory.store import PreferenceStore
from persona_agent import cli
from persona_agent.commands import pairs as pairs_command
from persona_agent.settings import Settings
from tests.fakes import WordHashEmbeddings, make_pair
from tests.reliability.inputs import KINDS, LIMITS, USER, Case, cases, expected_id, reply_text
from tests.reliability.summary import Tally

pytestmark = pytest.mark.reliability

DEFAULT_EXAMPLES = 12
EXAMPLES_PER_KIND = {"valid": 24, "control_chars": 20, "wrong_type": 40, "nesting_bomb_field": 16}
OBJECT_BATCHES = 120
TOKEN = "alice-import-token-123"
SURFACES = ("store.add_pairs", "store.import_user", "cli pairs import", "POST /memory/pairs/import")
Snapshot = dict[str, list[tuple[str, str, str]]]


def new_store() -> PreferenceStore:
    """A store over in-memory Chroma holding one pair of another user (bob)."""
    store = PreferenceStore(
        make_client(ephemeral=True), WordHashEmbeddings(), limits=LIMITS, prefix=f"bad{uuid.uuid4().hex[:10]}"
    )
    store.add_pairs("bob", [make_pair("bob", "bob's own question")])
    return store


def snapshot(store: PreferenceStore) -> Snapshot:
    """Every record of every collection: id, document and metadata."""
    taken: Snapshot = {}
    for name, collection in store.collections.items():
        got = collection.get(include=["documents", "metadatas"])
        documents = got["documents"] or [None] * len(got["ids"])
        metadatas = got["metadatas"] or [None] * len(got["ids"])
        taken[name] = sorted(
            (record_id, document or "", json.dumps(metadata, sort_keys=True))
            for record_id, document, metadata in zip(got["ids"], documents, metadatas, strict=True)
        )
    return taken


def others(taken: Snapshot) -> Snapshot:
    """The part of a snapshot that belongs to users other than the importing one."""
    return {name: [row for row in rows if not row[0].startswith(f"{USER}/")] for name, rows in taken.items()}


class Surfaces:
    """The four ways a batch can be imported, each over its own store."""

    def __init__(self, directory: Path, client: TestClient, stores: dict[str, PreferenceStore]) -> None:
        self.directory = directory
        self.client = client
        self.stores = stores
        self.runner = CliRunner()

    def submit(self, surface: str, case: Case) -> tuple[bool, str] | None:
        """Import the case's body on one surface; return (accepted, error message), None if n/a."""
        store = self.stores[surface]
        path = self.directory / f"{uuid.uuid4().hex}.jsonl"
        path.write_bytes(case.body)
        try:
            if surface == "store.add_pairs":
                store.add_pairs(USER, read_pairs(path, user_id=USER, limits=store.limits))
                return True, ""
            if surface == "store.import_user":
                try:
                    text = case.body.decode("utf-8")
                except UnicodeDecodeError:
                    return None  # the Python API takes text; decoding is the caller's business
                store.import_user(text, user_id=USER)
                return True, ""
            if surface == "cli pairs import":
                result = self.runner.invoke(cli.app, ["pairs", "import", str(path), "--user", USER, "--json"])
                if result.exit_code == 0:
                    return True, ""
                assert isinstance(result.exception, InvalidPreference), repr(result.exception)
                assert result.exception.exit_code == 2
                return False, str(result.exception)
            response = self.client.post(
                "/memory/pairs/import", content=case.body, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            if response.status_code == 201:
                return True, ""
            assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
            payload = response.json()
            assert payload["error"] == "InvalidPreference", payload
            return False, str(payload["detail"])
        except InvalidPreference as exc:
            return False, str(exc)
        finally:
            path.unlink()


@contextmanager
def open_surfaces(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Surfaces]:
    """Build a store per surface, the CLI pointed at its store and a client of the memory app."""
    stores = {surface: new_store() for surface in SURFACES}
    monkeypatch.setattr(pairs_command, "open_store", lambda: stores["cli pairs import"])
    resources = server.ServerResources(
        settings_factory=lambda: Settings(tokens=f"{TOKEN}={USER}"),  # type: ignore[call-arg]
        store_factory=lambda _settings: stores["POST /memory/pairs/import"],
    )
    with TestClient(server.create_app(resources)) as client:
        yield Surfaces(directory, client, stores)


def check_stored_intact(store: PreferenceStore, case: Case, known: set[str]) -> set[str]:
    """Assert every record of an accepted case reads back with exactly the texts sent; return ids.

    A pair already stored (same content, so same id) keeps its first copy's metadata.
    """
    ids = set()
    stored = {pair.id: pair for pair in store.list_pairs(USER, limit=store.count_pairs(USER))}
    for record in case.records:
        pair = stored[expected_id(record)]
        ids.add(pair.id)
        assert pair.user_id == USER
        assert pair.chosen == reply_text(record["chosen"])
        assert pair.rejected == reply_text(record["rejected"])
        assert [(t.role, t.content) for t in pair.context] == [
            (turn["role"], turn["content"]) for turn in record["context"]
        ]
        for key in ("split", "question_id"):
            if key in record and pair.id not in known:
                assert pair.metadata[key] == record[key]
    return ids


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    """Counts of every case tried in this module, written when the module is done."""
    counts = Tally("bad_input")
    yield counts
    counts.extra["cases"] = sum(v for k, v in counts.counts.items() if k.startswith("cases."))
    counts.extra["surface_checks"] = sum(
        v for k, v in counts.counts.items() if k.endswith(("accepted_intact", "rejected_by_name"))
    )
    counts.write()


@pytest.mark.parametrize("kind", KINDS)
def test_generated_batches_are_rejected_by_name_or_stored_intact_on_every_surface(
    kind: str, tally: Tally, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_surfaces(tmp_path, monkeypatch) as surfaces:

        @settings(
            max_examples=EXAMPLES_PER_KIND.get(kind, DEFAULT_EXAMPLES),
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=cases(kind))
        def check(case: Case) -> None:
            tally.add(f"cases.{case.kind}")
            verdicts = {}
            for surface in SURFACES:
                store = surfaces.stores[surface]
                before = snapshot(store)
                count_before = store.count_pairs(USER)
                outcome = surfaces.submit(surface, case)
                if outcome is None:
                    tally.add(f"{surface}.not_applicable")
                    continue
                accepted, message = outcome
                verdicts[surface] = accepted
                label = f"{case.kind} ({case.detail}) on {surface}"
                if accepted:
                    assert case.accepted, f"{label}: accepted a batch that must be rejected"
                    known = {row[0].removeprefix(f"{USER}/") for row in before["pairs"]}
                    ids = check_stored_intact(store, case, known)
                    new = ids - known
                    assert store.count_pairs(USER) == count_before + len(new), label
                    assert others(snapshot(store)) == others(before), f"{label}: touched another user"
                    tally.add(f"{surface}.accepted_intact")
                else:
                    assert not case.accepted, f"{label}: rejected a valid batch: {message}"
                    server_route = surface.startswith("POST")
                    assert case.matches(message, server=server_route), f"{label}: {message[:300]!r}"
                    assert snapshot(store) == before, f"{label}: a rejected batch changed the store"
                    tally.add(f"{surface}.rejected_by_name")
            assert len(set(verdicts.values())) == 1, f"surfaces disagree on {case.kind}: {verdicts}"

        tried = tally.counts[f"cases.{kind}"]
        check()
    assert tally.counts[f"cases.{kind}"] - tried >= EXAMPLES_PER_KIND.get(kind, DEFAULT_EXAMPLES)


# --- objects handed to the Python API directly ------------------------------------------------
def _bad_objects() -> st.SearchStrategy[tuple[Any, str]]:
    """Objects that are not valid pairs of the importing user, with the problem each must name."""
    valid = make_pair(USER, "a question")
    constructed = {k: getattr(valid, k) for k in PreferencePair.model_fields}
    return st.sampled_from(
        [
            (
                {"context": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"},
                "PreferencePair",
            ),
            ("a string", "PreferencePair"),
            (None, "PreferencePair"),
            (7, "PreferencePair"),
            (make_pair("bob", "bob's question"), "belongs to user 'bob'"),
            (PreferencePair.model_construct(**{**constructed, "context": ()}), "context"),
            (PreferencePair.model_construct(**{**constructed, "chosen": "x" * 30_000}), "over the limit"),
            (PreferencePair.model_construct(**{**constructed, "rejected": valid.chosen}), "must differ"),
            (PreferencePair.model_construct(**{**constructed, "id": "forged"}), "does not match"),
            (
                PreferencePair.model_construct(
                    **{**constructed, "context": (Turn.model_construct(role="user", content="a\x00b"),)}
                ),
                "NUL",
            ),
        ]
    )


def test_objects_that_are_not_valid_pairs_fail_the_whole_batch_by_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = new_store()
    tally = Tally("bad_input_objects")

    @settings(max_examples=OBJECT_BATCHES, derandomize=True, database=None, deadline=None)
    @given(
        good=st.lists(st.integers(0, 10_000), min_size=0, max_size=3),
        bad=st.lists(_bad_objects(), min_size=0, max_size=2),
        position=st.integers(0, 5),
    )
    def check(good: list[int], bad: list[tuple[Any, str]], position: int) -> None:
        batch: list[Any] = [make_pair(USER, f"question {n}", minutes=n) for n in good]
        for offset, (item, _) in enumerate(bad):
            batch.insert(min(position + offset, len(batch)), item)
        before = snapshot(store)
        if not bad:
            known = {row[0] for row in before["pairs"]}
            added = store.add_pairs(USER, batch)
            assert sorted(added) == sorted({p.id for p in batch if f"{USER}/{p.id}" not in known})
            stored = {pair.id: pair for pair in store.list_pairs(USER, limit=store.count_pairs(USER))}
            for pair in batch:
                assert stored.get(pair.id) == pair
            tally.add("accepted_intact")
            return
        first_bad = next(i for i, item in enumerate(batch) if any(item is b for b, _ in bad))
        expected = next(problem for item, problem in bad if item is batch[first_bad])
        with pytest.raises(InvalidPreference) as error:
            store.add_pairs(USER, batch)
        message = str(error.value)
        assert f"pair {first_bad + 1}: " in message and expected in message, message
        assert snapshot(store) == before
        tally.add("rejected_by_name")

    check()
    tally.extra["batches"] = tally.counts["accepted_intact"] + tally.counts["rejected_by_name"]
    tally.write()
    assert tally.counts["accepted_intact"] and tally.counts["rejected_by_name"]
