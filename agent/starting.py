"""Where a new user starts before their pairs say much: an archetype's persona, or a quick quiz.

Until a user has given a few pairs, the judge is the population's. Two ways to start closer to them:

* **An archetype** (`agent.archetypes`: a cluster of real users' tastes). `archetype_persona`
  writes it as a persona version, its source ``"archetype"``, so that drafting and the persona
  judge use it from the first turn; `starting_prior` moves the offline reward model's population
  prior to the archetype, so the user's offline judge starts there and their own pairs move it.
  The first persona learnt from their pairs replaces the archetype's as usual.
* **The starting quiz**: three either-or questions (`agent/data/starting_quiz.json`), each with two
  short replies that differ on one clear taste. `quiz_pair` turns a pick into an explicit pair
  marked as a quiz answer, the user's first evidence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from agent.errors import ConfigurationError, InvalidPreference
from agent.features import INTERPRETABLE
from agent.formats import describe_validation_error
from agent.records import DEFAULT_LIMITS, Limits, Persona, PreferencePair, Turn

if TYPE_CHECKING:
    from agent.archetypes import Archetype
    from agent.reward_model import RewardModel

logger = logging.getLogger(__name__)

ARCHETYPE_SOURCE: Final = "archetype"
QUIZ_FORMAT = "persona-agent/starting-quiz"
DEFAULT_QUIZ_PATH = Path(__file__).parent / "data" / "starting_quiz.json"
# the metadata key that marks a pair as an answer to the starting quiz (its value: the question key)
QUIZ_METADATA = "starting_quiz"


# --- archetypes ------------------------------------------------------------------------------
def _writing_hints(statements: Sequence[str]) -> list[str]:
    """Return what each archetype statement asks of a reply, where it is a feature's description."""
    from agent.offline_persona import WRITING_HINTS  # the offline model's stack loads only when needed

    hints = []
    for text in statements:
        for spec in INTERPRETABLE:
            for direction, described in (("more", spec.more), ("less", spec.less)):
                hint = WRITING_HINTS.get((spec.name, direction))
                if described == text and hint:
                    hints.append(hint)
    return hints


def archetype_persona(user_id: str, archetype: Archetype) -> Persona:
    """Write the archetype as the user's starting persona: its statements, and what they ask of a reply."""
    people = f"{archetype.users} {'person' if archetype.users == 1 else 'people'}"
    lines = [f'Starting persona this user chose: "{archetype.key}", the taste of {people} in the data:']
    lines += [f"- {statement}" for statement in archetype.statements or (archetype.title,)]
    hints = _writing_hints(archetype.statements)
    if hints:
        lines.append(f"Writing for them: {'; '.join(hints)}.")
    return Persona(
        user_id=user_id,
        text="\n".join(lines),
        model=f"{ARCHETYPE_SOURCE} {archetype.key}",
        source=ARCHETYPE_SOURCE,
    )


def archetype_statements(persona: Persona) -> list[str]:
    """Return the statements of a starting archetype's persona: its listed lines (`archetype_persona`)."""
    return [line[2:].strip() for line in persona.text.splitlines() if line.startswith("- ")]


def is_archetype_persona(persona: Persona | None) -> bool:
    """True when the persona is a starting archetype's, not one learnt from the user's pairs."""
    return persona is not None and persona.source == ARCHETYPE_SOURCE


def find_archetype(key: str, archetypes: Sequence[Archetype]) -> Archetype:
    """Return the archetype with this key, or raise `InvalidPreference` naming the known ones."""
    from agent.archetypes import archetype_named

    try:
        return archetype_named(key, archetypes)
    except ValueError as exc:
        raise InvalidPreference(f"archetype: {exc}") from None


def starting_prior(prior: RewardModel, archetypes: Sequence[Archetype], key: str | None) -> RewardModel:
    """Return where the user's offline model starts: `prior` moved to their chosen archetype, if any.

    A stored key that the shipped archetypes no longer hold (they were refitted) leaves the
    population prior, with a warning: the user's pairs still move it as usual.
    """
    if key is None:
        return prior
    for archetype in archetypes:
        if archetype.key == key:
            return archetype.apply(prior)
    logger.warning("starting archetype %r is not among the shipped archetypes; using the population's", key)
    return prior


# --- the starting quiz -----------------------------------------------------------------------
@dataclass(frozen=True)
class QuizQuestion:
    """One either-or question: a user message and two replies that differ on one taste."""

    key: str
    taste: str
    question: str
    replies: tuple[str, str]


@cache
def load_quiz(path: str | Path = DEFAULT_QUIZ_PATH) -> tuple[QuizQuestion, ...]:
    """Read the starting quiz (default: the shipped one); each file is read once."""
    target = Path(path)
    try:
        document: dict[str, Any] = json.loads(target.read_text(encoding="utf-8"))
        if document.get("format") != QUIZ_FORMAT:
            raise ValueError(f"not a starting quiz (format {document.get('format')!r})")
        questions = tuple(
            QuizQuestion(
                key=str(item["key"]),
                taste=str(item["taste"]),
                question=str(item["question"]),
                replies=(str(item["replies"][0]), str(item["replies"][1])),
            )
            for item in document["questions"]
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ConfigurationError(f"{target}: {exc}") from None
    if len({question.key for question in questions}) != len(questions):
        raise ConfigurationError(f"{target}: question keys repeat")
    return questions


def quiz_pair(
    user_id: str,
    question_key: object,
    choice: object,
    *,
    quiz: Sequence[QuizQuestion] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> PreferencePair:
    """Return the explicit pair of one quiz answer: reply `choice` (0 or 1) of the question over the other."""
    questions = load_quiz() if quiz is None else quiz
    question = next((item for item in questions if item.key == question_key), None)
    if question is None:
        known = ", ".join(item.key for item in questions)
        asked = str(question_key)[:40]
        raise InvalidPreference(f"feedback.quiz.question: no question {asked!r}; known: {known}")
    if not isinstance(choice, int) or isinstance(choice, bool) or choice not in (0, 1):
        raise InvalidPreference(f"feedback.quiz.choice: must be 0 or 1, got {choice!r}")
    try:
        return PreferencePair.model_validate(
            {
                "user_id": user_id,
                "context": (Turn(role="user", content=question.question),),
                "chosen": question.replies[choice],
                "rejected": question.replies[1 - choice],
                "source": "explicit",
                "metadata": {QUIZ_METADATA: question.key},
            },
            context={"limits": limits},
        )
    except ValidationError as exc:
        raise InvalidPreference(f"feedback.quiz: {describe_validation_error(exc)}") from None


def retaken_answers(stored: Sequence[PreferencePair], new: Sequence[PreferencePair]) -> list[str]:
    """Return the ids of stored quiz answers to the questions `new` answers again: a retake replaces them."""
    asked = {pair.metadata[QUIZ_METADATA] for pair in new if QUIZ_METADATA in pair.metadata}
    kept = {pair.id for pair in new}
    return [pair.id for pair in stored if pair.metadata.get(QUIZ_METADATA) in asked and pair.id not in kept]


def quiz_answer(feedback: Mapping[str, Any], user_id: str, limits: Limits = DEFAULT_LIMITS) -> PreferencePair:
    """Return the pair of a graph feedback ``{"quiz": {"question": key, "choice": 0 or 1}}``."""
    others = sorted(key for key, value in feedback.items() if key != "quiz" and value is not None)
    if others:
        raise InvalidPreference(f"feedback: a quiz answer comes alone, without {', '.join(others)}")
    answer = feedback["quiz"]
    if not isinstance(answer, Mapping):
        raise InvalidPreference('feedback.quiz: must be {"question": KEY, "choice": 0 or 1}')
    return quiz_pair(user_id, answer.get("question"), answer.get("choice"), limits=limits)
