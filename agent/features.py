"""Features of a reply for the offline reward model: its embedding plus interpretable measurements.

A reply is described, relative to the user message it answers, by

* its sentence embedding (injected: anything with ``embed(texts) -> (n, d) array``, normally
  `memory.embeddings.MiniLMEmbeddings`), and
* a handful of measurements a person can read: length, lists, headings, code blocks, questions
  back to the user, hedging, apologies, refusals, reading level, emoji, first person, informal
  markers, and how closely the reply follows the user's message.

Everything is deterministic. `FEATURES_VERSION` changes whenever a measurement changes, so a
model fitted on one version is never applied to vectors of another. Embeddings and measurements
are cached by text, and pair differences by pair id, so refitting a user model costs no new
feature work.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from agent.records import PreferencePair, Turn

FEATURES_VERSION = "1"


class Embedder(Protocol):
    """Anything that turns texts into an (n, d) array of vectors."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`."""
        ...


@dataclass(frozen=True)
class FeatureSpec:
    """One interpretable measurement and how to describe a liking or dislike for it."""

    name: str
    noun: str
    measures: str
    more: str
    less: str


INTERPRETABLE: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "length",
        "length",
        "log of the reply's length in characters",
        "prefers longer, more detailed replies than most people",
        "prefers shorter replies than most people",
    ),
    FeatureSpec(
        "lists",
        "list lines",
        "bullet and numbered list lines",
        "favours bullet lists",
        "prefers prose to lists",
    ),
    FeatureSpec(
        "headings",
        "headings",
        "markdown headings and bold title lines",
        "likes headings",
        "dislikes headings",
    ),
    FeatureSpec(
        "code_blocks", "code blocks", "fenced code blocks", "likes code blocks", "dislikes code blocks"
    ),
    FeatureSpec(
        "questions",
        "questions back",
        "questions asked back to the user",
        "likes being asked questions back",
        "dislikes questions back to them",
    ),
    FeatureSpec("hedging", "hedging", "hedging phrases", "tolerates hedging", "dislikes hedging"),
    FeatureSpec("apologies", "apologies", "apology phrases", "tolerates apologies", "dislikes apologies"),
    FeatureSpec(
        "refusal", "refusal", "a refusal or 'as an AI' disclaimer", "accepts refusals", "dislikes refusals"
    ),
    FeatureSpec(
        "reading_level",
        "reading level",
        "Flesch-Kincaid grade level",
        "prefers more sophisticated, denser writing",
        "prefers plainer, easier-to-read writing",
    ),
    FeatureSpec("emoji", "emoji", "emoji", "likes emoji", "dislikes emoji"),
    FeatureSpec(
        "first_person",
        "first-person voice",
        "first-person singular words per 100 words",
        "likes a personal, first-person voice",
        "dislikes a first-person voice",
    ),
    FeatureSpec(
        "informality",
        "casual tone",
        "contractions and exclamation marks per 100 words",
        "likes a casual tone",
        "prefers a formal tone",
    ),
    FeatureSpec(
        "query_overlap",
        "overlap with the question",
        "share of the user's content words the reply repeats",
        "likes replies that echo the question's words",
        "does not mind replies that stray from the question's words",
    ),
    FeatureSpec(
        "query_similarity",
        "similarity to the question",
        "embedding similarity between the reply and the user's message",
        "likes replies that stay close to the question",
        "likes replies that go beyond the literal question",
    ),
)
INTERPRETABLE_NAMES: tuple[str, ...] = tuple(spec.name for spec in INTERPRETABLE)
N_INTERPRETABLE = len(INTERPRETABLE)

_LIST_LINE = re.compile(r"^\s*(?:[-*•+]\s+|\d{1,3}[.)]\s+|[a-zA-Z][.)]\s+)")
_HEADING_LINE = re.compile(r"^\s*(?:#{1,6}\s+\S|\*\*[^*\n]{1,80}\*\*:?\s*$|[A-Z][^.!?\n]{0,60}:\s*$)")
_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_CODE_BLOCK = re.compile(r"(```|~~~).*?(\1|\Z)", re.DOTALL)
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_QUESTION = re.compile(r"\?(?:\s|$)")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
_EMOJI = re.compile("[\U0001f300-\U0001faff\U00002600-\U000027bf\U0001f000-\U0001f2ff]")
_HEDGES = re.compile(
    r"\b(?:might|may be|perhaps|possibly|probably|it depends|generally|typically|"
    r"it is important to note|it's important to note|keep in mind|however|i think|i believe|"
    r"it seems|could be|likely|not necessarily|in some cases|consult a)\b",
    re.IGNORECASE,
)
_APOLOGIES = re.compile(r"\b(?:sorry|i apologi[sz]e|apologies|my apologies|unfortunately)\b", re.IGNORECASE)
_REFUSALS = re.compile(
    r"\b(?:as an ai|as a language model|i(?:'m| am) (?:not able|unable) to|i can(?:not|'t) "
    r"(?:help|provide|assist|answer|do that|fulfil|fulfill|comply|generate|write)|i do(?: not|n't) have "
    r"(?:access|the ability|personal))",
    re.IGNORECASE,
)
_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"})
_STOPWORDS_TEXT = (
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this "
    "that these those what which who whom how why when where do does did can could would should will "
    "shall may might must i you your he she they we me my our their them his her there here not no so "
    "than then too very about into over under up down out more most some any all each few other such "
    "only own same just also please write give tell explain describe"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def text_key(text: str) -> str:
    """Return the cache key of a text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _syllables(word: str) -> int:
    word = word.lower().strip("'")
    count = len(_VOWEL_GROUP.findall(word))
    if word.endswith("e") and not word.endswith(("le", "ee")) and count > 1:
        count -= 1
    return max(count, 1)


def reading_level(text: str) -> float:
    """Return the Flesch-Kincaid grade of prose (code blocks removed), clipped to 0-20."""
    prose = _CODE_BLOCK.sub(" ", text)
    words = _WORD.findall(prose)
    if not words:
        return 0.0
    sentences = max(len(_SENTENCE_END.findall(prose)), 1)
    syllables = sum(_syllables(word) for word in words)
    grade = 0.39 * len(words) / sentences + 11.8 * syllables / len(words) - 15.59
    return float(min(max(grade, 0.0), 20.0))


def _content_words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text) if word.lower() not in _STOPWORDS and len(word) > 2}


def measure(reply: str, query: str) -> np.ndarray:
    """Return the text measurements of `reply` (all but `query_similarity`, left at 0), as floats."""
    lines = reply.splitlines()
    prose = _CODE_BLOCK.sub(" ", reply)
    words = _WORD.findall(prose)
    per_100 = 100.0 / max(len(words), 1)
    lowered = [word.lower() for word in words]
    query_words = _content_words(query)
    overlap = len(query_words & _content_words(reply)) / len(query_words) if query_words else 0.0
    contractions = sum(1 for word in lowered if "'" in word.strip("'"))
    values = {
        "length": math.log1p(len(reply)),
        "lists": math.log1p(sum(1 for line in lines if _LIST_LINE.match(line))),
        "headings": math.log1p(sum(1 for line in lines if _HEADING_LINE.match(line))),
        "code_blocks": math.log1p(len(_FENCE.findall(reply)) // 2 + len(_FENCE.findall(reply)) % 2),
        "questions": math.log1p(len(_QUESTION.findall(prose))),
        "hedging": math.log1p(len(_HEDGES.findall(prose))),
        "apologies": math.log1p(len(_APOLOGIES.findall(prose))),
        "refusal": 1.0 if _REFUSALS.search(prose) else 0.0,
        "reading_level": reading_level(reply),
        "emoji": math.log1p(len(_EMOJI.findall(reply))),
        "first_person": sum(1 for word in lowered if word in _FIRST_PERSON) * per_100,
        "informality": (contractions + prose.count("!")) * per_100,
        "query_overlap": overlap,
        "query_similarity": 0.0,
    }
    return np.array([values[name] for name in INTERPRETABLE_NAMES], dtype=np.float64)


class CachedEmbedder:
    """Wrap an embedder with a per-text cache that can be saved to and loaded from a .npz file."""

    def __init__(self, embedder: Embedder, path: str | Path | None = None) -> None:
        self.embedder = embedder
        self.path = Path(path) if path is not None else None
        self._vectors: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            with np.load(self.path) as data:
                for key, vector in zip(data["keys"], data["vectors"], strict=True):
                    self._vectors[str(key)] = vector

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`, computing only those not seen before."""
        missing = list(dict.fromkeys(text for text in texts if text_key(text) not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.embedder.embed(missing), strict=True):
                self._vectors[text_key(text)] = np.asarray(vector, dtype=np.float32)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[text_key(text)] for text in texts])

    def save(self, path: str | Path | None = None) -> None:
        """Write the cache to `path` (default: the path it was loaded from)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the embedding cache to")
        target.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._vectors)
        np.savez(target, keys=np.array(keys), vectors=np.stack([self._vectors[key] for key in keys]))


def last_user_message(context: Sequence[Turn]) -> str:
    """Return the last user turn of a conversation (empty when there is none)."""
    for turn in reversed(context):
        if turn.role == "user":
            return turn.content
    return ""


class FeatureExtractor:
    """Turn (user message, reply) into a feature vector: interpretable measurements, then the embedding."""

    def __init__(self, embedder: Embedder, *, measure_fn: Callable[[str, str], np.ndarray] = measure) -> None:
        self.embedder = embedder if isinstance(embedder, CachedEmbedder) else CachedEmbedder(embedder)
        self._measure = measure_fn
        self._features: dict[tuple[str, str], np.ndarray] = {}
        self._pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.version = FEATURES_VERSION

    def is_cached(self, query: str, reply: str) -> bool:
        """True when the features of this reply to this message need no new computation."""
        return (text_key(query), text_key(reply)) in self._features

    def reply_features(self, query: str, replies: Sequence[str]) -> np.ndarray:
        """Return an (n, N_INTERPRETABLE + d) matrix of features of `replies` answering `query`."""
        query_key = text_key(query)
        todo = [
            reply for reply in dict.fromkeys(replies) if (query_key, text_key(reply)) not in self._features
        ]
        if todo:
            vectors = self.embedder.embed([query, *todo])
            query_vector, reply_vectors = vectors[0], vectors[1:]
            for reply, vector in zip(todo, reply_vectors, strict=True):
                measured = self._measure(reply, query)
                measured[INTERPRETABLE_NAMES.index("query_similarity")] = float(
                    np.dot(vector, query_vector)
                    / max(np.linalg.norm(vector) * np.linalg.norm(query_vector), 1e-12)
                )
                self._features[(query_key, text_key(reply))] = np.concatenate(
                    [measured, np.asarray(vector, dtype=np.float64)]
                )
        return np.stack([self._features[(query_key, text_key(reply))] for reply in replies])

    def pair_difference(self, pair: PreferencePair) -> np.ndarray:
        """Return features(chosen) - features(rejected) for a pair, cached by pair id."""
        return self._pair(pair)[2]

    def _pair(self, pair: PreferencePair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cached = self._pairs.get(pair.id)
        if cached is None:
            chosen, rejected = self.reply_features(pair.query, [pair.chosen, pair.rejected])
            cached = self._pairs[pair.id] = (chosen, rejected, chosen - rejected)
        return cached

    def pair_features(self, pairs: Sequence[PreferencePair]) -> tuple[np.ndarray, np.ndarray]:
        """Return the feature matrices of the chosen and of the rejected replies of `pairs`."""
        self.pair_differences(pairs)
        rows = [self._pair(pair) for pair in pairs]
        return np.stack([row[0] for row in rows]), np.stack([row[1] for row in rows])

    def pair_differences(self, pairs: Sequence[PreferencePair]) -> np.ndarray:
        """Stack `pair_difference` for many pairs, batching the embedding of unseen texts."""
        by_query: dict[str, list[str]] = {}
        for pair in pairs:
            if pair.id not in self._pairs:
                by_query.setdefault(pair.query, []).extend([pair.chosen, pair.rejected])
        # one embedding call for every unseen text: the encoder batches by length
        self.embedder.embed([text for query, replies in by_query.items() for text in (query, *replies)])
        for query, replies in by_query.items():
            self.reply_features(query, replies)
        if not pairs:
            return np.zeros((0, 0))
        return np.stack([self.pair_difference(pair) for pair in pairs])

    def feature_names(self, dimensions: int) -> tuple[str, ...]:
        """Return the names of a full feature vector with a `dimensions`-wide embedding."""
        return (*INTERPRETABLE_NAMES, *(f"embedding_{i}" for i in range(dimensions)))
