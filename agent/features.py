"""Features of a reply for the offline reward model: its embedding plus interpretable measurements.

A reply is described, relative to the user message it answers, by

* its sentence embedding (injected: anything with ``embed(texts) -> (n, d) array``, normally
  `memory.embeddings.MiniLMEmbeddings`), and
* a handful of measurements a person can read: length, lists, headings, code blocks, questions
  back to the user, hedging, apologies, refusals, reading level, emoji, first person, addressing
  the reader, informal markers, how closely the reply follows the user's message, sentence and
  word length, figures, the opening sentence, examples, paragraphs, exclamation, emphasis, a
  closing summary, the number of sentences, parenthetical remarks, and repetition (`INTERPRETABLE`).

Everything is deterministic. `FEATURES_VERSION` changes whenever a measurement changes, so a
model fitted on one version is never applied to vectors of another. Embeddings and measurements
are cached by text, and pair differences by pair id, so refitting a user model costs no new
feature work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.embedding import CachedEmbedder, Embedder, text_key
from agent.records import PreferencePair, Turn

FEATURES_VERSION = "12"


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
        "log of the reply's length in words",
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
    FeatureSpec(
        "hedging",
        "hedging",
        "hedging phrases per 100 words",
        "tolerates hedging",
        "dislikes hedging and prefers plain assertions",
    ),
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
        "addressing",
        "addressing the reader",
        "log of the second-person words (you, your) per 100 words",
        "likes replies that speak to the reader directly",
        "prefers impersonal replies that do not address the reader",
    ),
    FeatureSpec(
        "informality",
        "casual tone",
        "contractions per 100 words",
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
    FeatureSpec(
        "sentence_length",
        "sentence length",
        "log of the mean words per sentence",
        "likes long, flowing sentences",
        "prefers short sentences",
    ),
    FeatureSpec(
        "word_length",
        "long words",
        "mean letters per word",
        "likes precise, technical vocabulary",
        "prefers plain, everyday words",
    ),
    FeatureSpec(
        "numbers",
        "numbers and figures",
        "log of the words with digits per 100 words, code included",
        "likes numbers and figures",
        "prefers replies without many numbers",
    ),
    FeatureSpec(
        "first_sentence",
        "opening sentence length",
        "log of the length in words of the reply's opening (its first sentence or line)",
        "does not mind a long lead-in before the answer",
        "wants the answer in a short, direct first sentence",
    ),
    FeatureSpec(
        "examples",
        "concrete examples",
        "example markers (for example, e.g., for instance, such as)",
        "likes concrete examples",
        "prefers replies without worked examples",
    ),
    FeatureSpec(
        "paragraphs",
        "paragraphs",
        "log of the number of blank-line separated blocks",
        "likes replies broken into many paragraphs",
        "prefers a single compact block of text",
    ),
    FeatureSpec(
        "exclamation",
        "exclamation marks",
        "exclamation marks per 100 words",
        "likes an enthusiastic tone",
        "dislikes exclamation marks",
    ),
    FeatureSpec(
        "emphasis",
        "bold and italic emphasis",
        "bold or italic spans",
        "likes bold and italic emphasis",
        "dislikes bold and italic emphasis",
    ),
    FeatureSpec(
        "summary",
        "closing summary",
        "a closing summary (in summary, in conclusion, overall, to sum up)",
        "likes a closing summary",
        "dislikes a closing summary",
    ),
    FeatureSpec(
        "sentences",
        "number of sentences",
        "log of the number of sentences (a list item or a heading is one)",
        "likes replies that take many sentences",
        "prefers replies said in few sentences",
    ),
    FeatureSpec(
        "parentheses",
        "parenthetical remarks",
        "log of the number of opening parentheses, code included",
        "likes parenthetical remarks",
        "dislikes parenthetical remarks",
    ),
    FeatureSpec(
        "repetition",
        "repetition",
        "log of the longest stretch of tokens that only repeats what the reply already said",
        "tolerates repetition",
        "dislikes repetition",
    ),
)
# Measurements of whether a reply works at all (it answers the question, it does not loop)
# rather than a matter of taste: they keep the population's weight for every user, so a user
# who likes short replies never gets a looping or off-topic one.
QUALITY_FEATURES: frozenset[str] = frozenset({"repetition", "query_overlap", "query_similarity"})
INTERPRETABLE_NAMES: tuple[str, ...] = tuple(spec.name for spec in INTERPRETABLE)
N_INTERPRETABLE = len(INTERPRETABLE)

_LIST_LINE = re.compile(r"^\s*(?:[-*•+]\s+|\d{1,3}[.)]\s+|[a-zA-Z][.)]\s+)")
_HEADING_LINE = re.compile(r"^\s*(?:#{1,6}\s+\S|\*\*[^*\n]{1,80}\*\*:?\s*$|[A-Z][^.!?\n]{0,60}:\s*$)")
_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_CODE_BLOCK = re.compile(r"(```|~~~).*?(\1|\Z)", re.DOTALL)
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)|\n")
_QUESTION = re.compile(r"\?(?:\s|$)")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
_EMOJI = re.compile("[\U0001f300-\U0001faff\U00002600-\U000027bf\U0001f000-\U0001f2ff]")
_HEDGES = re.compile(
    r"\b(?:may|might|could|perhaps|possibly|probably|likely|unlikely|maybe|seems?|appears? to|"
    r"suggests?|generally|typically|somewhat|fairly|rather|relatively|arguably|"
    r"apparently|presumably|however|although|it depends|tends? to|in some cases|not necessarily|"
    r"i think|i believe|i guess|it is important to note|it's important to note|keep in mind|consult a)\b",
    re.IGNORECASE,
)
# a contraction, not a possessive: "don't", "we'll", "it's", never "the dog's"
_CONTRACTION = re.compile(
    r"\b(?:[a-z]+n't|[a-z]+'(?:re|ve|ll|m|d)|(?:it|that|there|here|what|where|who|how|let|he|she)'s)\b",
    re.IGNORECASE,
)
_APOLOGIES = re.compile(r"\b(?:sorry|i apologi[sz]e|apologies|my apologies|unfortunately)\b", re.IGNORECASE)
_REFUSALS = re.compile(
    r"\b(?:as an ai|as a language model|i(?:'m| am) (?:not able|unable) to|i can(?:not|'t) "
    r"(?:help|provide|assist|answer|do that|fulfil|fulfill|comply|generate|write)|i do(?: not|n't) have "
    r"(?:access|the ability|personal))",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\b\S*\d\S*\b")
_EXAMPLES = re.compile(r"\b(?:for example|for instance|e\.g\.|such as|example:|an example)", re.IGNORECASE)
_EMPHASIS = re.compile(r"(\*\*|__)[^*_\n]{1,80}\1|(?<![*\w])\*[^*\s][^*\n]{0,80}\*(?!\*)")
_SUMMARY = re.compile(
    r"\b(?:in summary|in conclusion|to sum up|to summari[sz]e|overall,|in short,|all in all|ultimately,)",
    re.IGNORECASE,
)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# the opening of a reply: up to its first sentence end or line break
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CLOSED_CODE_BLOCK = re.compile(r"(```|~~~).*?\1", re.DOTALL)
_TOKEN = re.compile(r"\w+|[^\w\s]")
# A span of this many tokens seen before in the same reply counts as repeated text.
_REPEAT_SPAN = 10
_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"})
_SECOND_PERSON = frozenset(
    {"you", "your", "yours", "yourself", "yourselves", "you're", "you've", "you'd", "you'll"}
)
_STOPWORDS_TEXT = (
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this "
    "that these those what which who whom how why when where do does did can could would should will "
    "shall may might must i you your he she they we me my our their them his her there here not no so "
    "than then too very about into over under up down out more most some any all each few other such "
    "only own same just also please write give tell explain describe"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


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


def repetition(text: str) -> int:
    """Return the longest stretch of tokens that repeats what the reply said just before it.

    A token is repeated when the span of `_REPEAT_SPAN` tokens starting at it was said before.
    A stretch of repeated tokens counts only when its nearest earlier copy lies within the
    stretch's own length (plus one span) before it: text that says itself again and again
    ("something that is something that is ...", a paragraph pasted right after itself) loops,
    however long the sane text before it. A sentence that comes back once far from where it
    was first said, or lines that share a template (a lesson plan's "Introduction (5 minutes)"
    on each day), do not. Code blocks are left out: code repeats itself legitimately (an
    unclosed fence is not code: a reply can loop inside it).
    """
    tokens = [token.lower() for token in _TOKEN.findall(_CLOSED_CODE_BLOCK.sub(" ", text))]
    if len(tokens) <= _REPEAT_SPAN:
        return 0
    last_seen: dict[tuple[str, ...], int] = {}
    repeated = np.zeros(len(tokens), dtype=bool)
    # distance back to the nearest earlier copy of the span starting at each token (0: none)
    distance = np.zeros(len(tokens), dtype=int)
    for start in range(len(tokens) - _REPEAT_SPAN + 1):
        span = tuple(tokens[start : start + _REPEAT_SPAN])
        if span in last_seen:
            repeated[start : start + _REPEAT_SPAN] = True
            distance[start] = start - last_seen[span]
        last_seen[span] = start
    longest = 0
    for run_start, run_end in _runs(repeated):
        copies = distance[run_start:run_end]
        nearest = copies[copies > 0].min()
        if nearest <= run_end - run_start + _REPEAT_SPAN:
            longest = max(longest, run_end - run_start)
    return longest


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Return the (start, end) of each maximal run of True in `flags`, end exclusive."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


# A reply that repeats itself for this many tokens in a row is taken as looping or broken.
DEGENERATE_REPETITION = math.log1p(40)


# How far from the user's message a reply may be, with all-MiniLM-L6-v2 embeddings, before it
# answers something else: (cosine at most, the other reply closer by at least, words at least).
# Terse replies are spared: "true." or "No bug." say little to an embedding.
MINILM_OFF_TOPIC = (0.15, 0.3, 8.0)


def strays(features: np.ndarray, similarity: float, gap: float, words: float) -> np.ndarray:
    """Return, for rows of reply features to one message, whether reply i strays where reply j answers.

    `[i, j]` is True when reply i is at most `similarity` close to the user's message
    (`query_similarity`), has at least `words` words, and reply j is closer by at least `gap`: an
    answer to another question, which no taste should prefer to an answer to this one. The
    preference data cannot teach this (both replies of every pair answer the question), so it is a
    rule; its thresholds hold for one embedder (`MINILM_OFF_TOPIC`, `TastePrior.off_topic`).
    """
    rows = np.asarray(features)
    closeness = rows[:, INTERPRETABLE_NAMES.index("query_similarity")]
    length = np.expm1(rows[:, INTERPRETABLE_NAMES.index("length")])
    far = (closeness <= similarity) & (length >= words)
    return far[:, None] & (closeness[None, :] - closeness[:, None] >= gap)


def degeneracy(features: np.ndarray) -> np.ndarray:
    """Return, per row of a reply feature matrix, how far it loops (0 when it does not)."""
    repeated = np.asarray(features)[:, INTERPRETABLE_NAMES.index("repetition")]
    return np.where(repeated >= DEGENERATE_REPETITION, repeated, 0.0)


def _sentences(prose: str) -> list[str]:
    return [part for part in _SENTENCE_END.split(prose) if _WORD.search(part)]


def _content_words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text) if word.lower() not in _STOPWORDS and len(word) > 2}


def measure(reply: str, query: str) -> np.ndarray:
    """Return the text measurements of `reply` (all but `query_similarity`, left at 0), as floats."""
    lines = reply.splitlines()
    # a typographic apostrophe is an apostrophe: "don’t" is one word, and a contraction
    prose = _CODE_BLOCK.sub(" ", reply).replace("\u2019", "'")
    words = _WORD.findall(prose)
    per_100 = 100.0 / max(len(words), 1)
    lowered = [word.lower() for word in words]
    query_words = _content_words(query)
    overlap = len(query_words & _content_words(reply)) / len(query_words) if query_words else 0.0
    contractions = len(_CONTRACTION.findall(prose))
    sentences = _sentences(prose)
    # Word length reads the prose; a reply that is all code has none, and a mean over no words is
    # no measurement (0 letters a word would be the plainest reply of all): there it reads the
    # code's words. Its sentence length stays 0, the shortest: code lines are short.
    reply_words = _WORD.findall(reply)
    read_words = words or reply_words
    values = {
        "length": math.log1p(len(reply.split())),
        "lists": math.log1p(sum(1 for line in lines if _LIST_LINE.match(line))),
        "headings": math.log1p(sum(1 for line in lines if _HEADING_LINE.match(line))),
        "code_blocks": math.log1p(len(_FENCE.findall(reply)) // 2 + len(_FENCE.findall(reply)) % 2),
        "questions": math.log1p(len(_QUESTION.findall(prose))),
        "hedging": len(_HEDGES.findall(prose)) * per_100,
        "apologies": math.log1p(len(_APOLOGIES.findall(prose))),
        "refusal": 1.0 if _REFUSALS.search(prose) else 0.0,
        "reading_level": reading_level(reply),
        "emoji": math.log1p(len(_EMOJI.findall(reply))),
        "first_person": sum(1 for word in lowered if word in _FIRST_PERSON) * per_100,
        # on a log scale: most replies say "you" rarely, and a taste read only from clear
        # differences must see 0.4 against none per 100 words as one, next to the spread that
        # a few replies full of "you" give the raw rate
        "addressing": math.log1p(sum(1 for word in lowered if word in _SECOND_PERSON) * per_100),
        "informality": contractions * per_100,
        "query_overlap": overlap,
        "query_similarity": 0.0,
        "sentence_length": math.log1p(len(words) / max(len(sentences), 1)),
        "word_length": sum(len(word) for word in read_words) / len(read_words) if read_words else 0.0,
        # figures count wherever a reader meets them, code included: the digits of a worked
        # example or of a program's output are what a reply full of numbers looks like
        "numbers": math.log1p(len(_NUMBER.findall(reply)) * 100.0 / max(len(reply_words), 1)),
        "first_sentence": math.log1p(len(_FIRST_SENTENCE.split(reply.strip(), maxsplit=1)[0].split())),
        "examples": math.log1p(len(_EXAMPLES.findall(prose))),
        "paragraphs": math.log1p(len([p for p in _PARAGRAPH_BREAK.split(reply.strip()) if p.strip()])),
        "exclamation": prose.count("!") * per_100,
        "emphasis": math.log1p(len(_EMPHASIS.findall(prose))),
        "summary": math.log1p(len(_SUMMARY.findall(prose))),
        "sentences": math.log1p(len(sentences)),
        # as a reader counts them, code included
        "parentheses": math.log1p(reply.count("(")),
        "repetition": math.log1p(repetition(reply)),
    }
    return np.array([values[name] for name in INTERPRETABLE_NAMES], dtype=np.float64)


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

    def query_vectors(self, pairs: Sequence[PreferencePair]) -> np.ndarray:
        """Return the embedding of each pair's user message (cached with the replies')."""
        return self.embedder.embed([pair.query for pair in pairs])

    def query_vector(self, query: str) -> np.ndarray:
        """Return the embedding of one user message."""
        return self.embedder.embed([query])[0]
