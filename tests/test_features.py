"""Reply features: deterministic measurements, caching and the embedding block."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.embedding import CachedEmbedder
from agent.features import (
    FEATURES_VERSION,
    INTERPRETABLE_NAMES,
    MINILM_OFF_TOPIC,
    N_INTERPRETABLE,
    FeatureExtractor,
    measure,
    reading_level,
    repetition,
    strays,
)
from agent.records import PreferencePair, Turn
from tests.fakes import HashEmbedder


def value(reply: str, name: str, query: str = "How do I bake bread?") -> float:
    return float(measure(reply, query)[INTERPRETABLE_NAMES.index(name)])


def test_measurements_are_deterministic() -> None:
    reply = "Sure! Here's how:\n\n## Steps\n- Mix flour\n- Knead\n\nI think it might take an hour. Ready?"
    first, second = measure(reply, "How do I bake bread?"), measure(reply, "How do I bake bread?")
    assert first.shape == (N_INTERPRETABLE,)
    assert np.array_equal(first, second)
    assert FEATURES_VERSION


def test_measurements_see_structure_and_tone() -> None:
    plain = "Mix flour and water, knead the dough, let it rise and bake it."
    assert value("- one\n- two\n3. three", "lists") > value(plain, "lists") == 0
    assert value("## Ingredients\nflour\n**Method:**\nknead", "headings") > value(plain, "headings") == 0
    assert value("Run:\n```python\nprint(1)\n```\nthen\n```\nx\n```", "code_blocks") > value(
        plain, "code_blocks"
    )
    assert value("Do you want a sourdough? Or white?", "questions") > value(plain, "questions") == 0
    assert value("It might work, perhaps, but it depends.", "hedging") > value(plain, "hedging") == 0
    assert value("I'm sorry, unfortunately I cannot help with that.", "apologies") > 0
    assert value("As an AI, I cannot provide that.", "refusal") == 1.0 and value(plain, "refusal") == 0.0
    assert value("Great bread 🍞🎉", "emoji") > value(plain, "emoji") == 0
    assert value("I love it and my family does too.", "first_person") > value(plain, "first_person") == 0
    assert value("It's easy! You'll love it!", "informality") > value(plain, "informality") == 0
    # a contraction with either apostrophe counts; a possessive is no contraction
    assert value("I don\u2019t mind.", "informality") == value("I don't mind.", "informality") > 0
    assert value("The baker's bread is the town's pride.", "informality") == 0
    assert value("Bake bread in an oven.", "query_overlap") > value("Use a pan.", "query_overlap")
    assert value("word " * 100, "length") > value("word " * 10, "length")


def test_measurements_of_the_tastes_people_state() -> None:
    plain = "Mix flour and water, knead the dough, let it rise and bake it."
    assert value("Short. Clear. Done.", "sentence_length") < value(plain, "sentence_length")
    assert value("Use yeast.", "word_length") < value("Incorporate fermentation agents.", "word_length")
    assert value("Bake at 220 C for 35 minutes.", "numbers") > value(plain, "numbers") == 0
    # figures count in code too, as a reader sees them
    sums = "Add them:\n```python\ntotal = 17 + 25 + 38\n```"
    assert value(sums, "numbers") > value("Add them:\n```python\ntotal = a + b + c\n```", "numbers") == 0
    # a reply that is all code has no prose: its words are the code's, not an empty mean of 0
    code = "```python\ndef fibonacci(count):\n    return sequence\n```"
    assert value(code, "word_length") > value("Use yeast.", "word_length")
    direct = "Yes. Bread needs flour, water, salt and yeast, mixed and baked."
    lead_in = "Bread, which people have baked for thousands of years in many forms, needs flour. Bake it."
    assert value(direct, "first_sentence") < value(lead_in, "first_sentence")
    assert value("Use a strong flour, for example bread flour.", "examples") > value(plain, "examples") == 0
    assert value("Mix.\n\nKnead.\n\nBake.", "paragraphs") > value(plain, "paragraphs")
    assert value("Great bread!", "exclamation") > value(plain, "exclamation") == 0
    assert value("Use **strong** flour.", "emphasis") > value(plain, "emphasis") == 0
    assert value(plain + " In summary, bake it.", "summary") > value(plain, "summary") == 0
    spoken = "You can bake it in your own oven; you'll need an hour."
    assert value(spoken, "addressing") > value(plain, "addressing") == 0
    assert value("I baked it in my oven.", "addressing") == 0
    # sentences of the prose: a list item is one, a code block none
    told = "Mix the flour. Knead it well.\n- Let it rise.\n- Bake it.\n```python\nbake()\n```"
    assert value(told, "sentences") == pytest.approx(math.log1p(4))
    assert value("Mix, knead and bake.", "sentences") < value(told, "sentences")
    # parentheses as a reader meets them, code included
    aside = "Bake it (an hour is enough) at 220 C."
    assert value(aside, "parentheses") > value(plain, "parentheses") == 0
    assert value("```python\nbake(bread)\n```", "parentheses") > 0


def test_repetition_measures_a_loop_not_a_list() -> None:
    answer = "\n".join(f"{i}. Step {i}: mix the flour with water and salt number {i}." for i in range(8))
    loop = "To bake bread, mix flour and water. " + " ".join(["something that is"] * 30)
    pasted = "Knead the dough until it is smooth and elastic, then let it rise. " * 3
    assert repetition(answer) < 20
    assert repetition(loop) >= 80
    assert repetition(pasted) >= 20
    assert value(loop, "repetition") > value(answer, "repetition")


def test_repetition_spares_a_template_and_a_sentence_said_again_later() -> None:
    opening = (
        "Introduction (5 minutes): greet the students, introduce the topic of the day, ask what they "
        "already know about it and write their answers on the whiteboard for everyone to see."
    )
    activities = ("act out the signing of the treaty", "mime a market scene", "stage a debate in two teams")
    plan = "\n\n".join(
        f"Day {day}:\n{opening}\nMain activity: the class will {activity}, then discuss it."
        for day, activity in enumerate(activities, 1)
    )
    caveat = (
        "However, they might neglect to mention that the economy was already growing when they "
        "took office, and that much of that growth was due to factors outside of their control."
    )
    body = " ".join(f"Point {i}: a politician cites figure {i} on jobs, crime and taxes." for i in range(15))
    essay = f"{caveat} {body} {caveat}"
    assert repetition(plan) == 0
    assert repetition(essay) == 0
    # the same paragraph pasted right after itself is a loop, however far into the reply
    assert repetition(f"{body} {caveat} {caveat} {caveat}") >= 60


def test_reading_level_rises_with_long_words_and_sentences() -> None:
    simple = "The cat sat. The dog ran. We had fun."
    dense = (
        "Comprehensive institutional considerations necessitate multidimensional evaluation of "
        "organizational interdependencies throughout international administrative infrastructures."
    )
    assert reading_level(dense) > reading_level(simple) + 5
    assert reading_level("") == 0.0


def test_extractor_appends_embedding_and_query_similarity() -> None:
    embedder = HashEmbedder(dimensions=8)
    extractor = FeatureExtractor(embedder)
    rows = extractor.reply_features("How do I bake bread?", ["Knead and bake.", "Use yeast."])
    assert rows.shape == (2, N_INTERPRETABLE + 8)
    query_vector, reply_vector = embedder.embed(["How do I bake bread?", "Knead and bake."])
    similarity = rows[0, INTERPRETABLE_NAMES.index("query_similarity")]
    assert abs(similarity - float(np.dot(query_vector, reply_vector))) < 1e-5
    assert np.allclose(rows[0, N_INTERPRETABLE:], reply_vector, atol=1e-6)
    again = FeatureExtractor(HashEmbedder(dimensions=8)).reply_features(
        "How do I bake bread?", ["Knead and bake."]
    )
    assert np.array_equal(rows[0], again[0])


def test_extractor_embeds_each_text_once() -> None:
    embedder = HashEmbedder()
    extractor = FeatureExtractor(embedder)
    context = (Turn(role="user", content="Name a fruit."),)
    pairs = [
        PreferencePair(user_id="u", context=context, chosen="Apple.", rejected="Pear."),
        PreferencePair(user_id="u", context=context, chosen="Pear.", rejected="Plum."),
    ]
    differences = extractor.pair_differences(pairs)
    extractor.pair_differences(pairs)
    extractor.pair_difference(pairs[0])
    assert sorted(embedder.embedded) == sorted(["Name a fruit.", "Apple.", "Pear.", "Plum."])
    chosen, rejected = extractor.reply_features("Name a fruit.", ["Apple.", "Pear."])
    assert np.allclose(differences[0], chosen - rejected)


def test_cached_embedder_round_trips_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.npz"
    first = CachedEmbedder(HashEmbedder(), path)
    vectors = first.embed(["alpha", "beta"])
    first.save()
    fresh = HashEmbedder()
    second = CachedEmbedder(fresh, path)
    assert np.array_equal(second.embed(["beta", "alpha"]), vectors[::-1])
    assert fresh.embedded == []
    assert "alpha" in second and "gamma" not in second


def test_a_reply_strays_when_it_is_far_from_the_message_and_the_other_is_close() -> None:
    rows = np.zeros((3, N_INTERPRETABLE))
    rows[:, INTERPRETABLE_NAMES.index("query_similarity")] = [0.05, 0.6, 0.1]
    rows[:, INTERPRETABLE_NAMES.index("length")] = np.log1p([40, 40, 2])
    found = strays(rows, *MINILM_OFF_TOPIC)
    assert found[0, 1] and not found[1, 0]
    assert not found[2, 1]  # a terse reply says too little to an embedding to be called off-topic
    assert not found[0, 2] and not found[2, 0]  # neither is much closer to the message
