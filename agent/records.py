"""Typed records of the method: preference pairs, personas, verdicts, rankings and demos.

Every record validates at the boundary, so bad input fails with a message naming the field
before anything reaches a model or the memory store. Size limits come from a `Limits`
object passed as pydantic validation context (``model_validate(data, context={"limits": ...})``);
without one, `DEFAULT_LIMITS` applies.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.sections import escape_section_text

Role = Literal["system", "user", "assistant"]
PairSource = Literal["explicit", "import", "implicit", "edit", "regenerate"]
# How much one pair counts in every fit, by how it was given: a pick among shown replies (or one
# imported from a file of picks) fully; a reply the user rewrote (`edit`: their text over the
# original) or asked to have redone and then kept the new one (`regenerate`) less, because the
# preference is inferred from an action rather than stated; `implicit` is any other inferred pair.
# A rewrite says plainly that the original fell short, so it counts more than the other inferred
# pairs; their text is still the user's own, unlike any reply they will be shown.
SOURCE_WEIGHTS: dict[str, float] = {
    "explicit": 1.0,
    "import": 1.0,
    "implicit": 0.5,
    "edit": 0.7,
    "regenerate": 0.3,
}
PAIR_SOURCES: tuple[str, ...] = get_args(PairSource)
PersonaSource = Literal["llm", "offline", "archetype"]
MetadataValue = str | int | float | bool


class Limits(BaseModel):
    """Size caps enforced on every pair; configurable through settings."""

    model_config = ConfigDict(frozen=True)

    max_text_chars: int = Field(20_000, gt=0, description="Longest reply or turn, in characters.")
    max_context_turns: int = Field(64, gt=0, description="Most turns in a pair's context.")
    max_id_chars: int = Field(128, gt=0, description="Longest user id.")
    max_metadata_items: int = Field(32, ge=0, description="Most metadata keys on one pair.")


DEFAULT_LIMITS = Limits()
# Records read back from memory were validated when stored; limits lowered since must not reject them.
STORED_LIMITS = Limits(
    max_text_chars=10**9, max_context_turns=10**6, max_id_chars=10**4, max_metadata_items=10**4
)


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def _limits(info: ValidationInfo) -> Limits:
    context = info.context or {}
    limits = context.get("limits", DEFAULT_LIMITS)
    return limits if isinstance(limits, Limits) else DEFAULT_LIMITS


def check_text(value: str, *, max_chars: int) -> str:
    """Reject empty, oversized or un-encodable text; return it unchanged otherwise."""
    if not value.strip():
        raise ValueError("must not be empty")
    if len(value) > max_chars:
        raise ValueError(f"is {len(value)} characters, over the limit of {max_chars}")
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("is not valid unicode (it holds a lone surrogate)") from exc
    return value


# Directions to the judge have no place in a description of a user's taste. First/Second are
# matched only capitalized, as the judge's answer format writes them ("answers first" is a taste);
# "ignore"/"disregard" count only with an object that is the judge's own input ("ignore the previous
# turns" and "always answer directly" are tastes).
_JUDGE_DIRECTIONS = re.compile(
    r"\b(ignore|disregard|forget|override)\s+(?:(?:all|any|the|your|these|those|of|every|previous|"
    r"prior|above|earlier|system|judge'?s?|its)\s+){0,4}(instructions?|persona|rules|prompts?|"
    r"guidelines|examples|demos|the\s+above|everything)\b"
    r"|\bnew\s+instructions\b"
    r"|\b(answer|choose|pick|select|say|output|respond|reply|prefer|return|write|vote)\s+"
    r"(with\s+|only\s+)?[\"'“‘]?(?-i:First|Second|FIRST|SECOND)\b"
    r"|\b(choose|pick|select)\s+(the\s+)?(first|second|other|former|latter)\s+"
    r"(reply|response|answer|option|candidate|one)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
MIN_PERSONA_WORDS = 3
# A text loops when a phrase of LOOP_WORDS words comes back, or when under MIN_DISTINCT_SHARE of
# its three-word phrases are distinct (short lines repeated); real personas stay above 0.8.
LOOP_WORDS = 10
MIN_DISTINCT_SHARE = 0.6
# Text that stops on a comma, an opening bracket or a word that needs a continuation was cut off.
_FRAGMENT_END = re.compile(
    r"([,;:(\[{–—-]|\b(?i:and|or|but|nor|the|an|of|to|that|which|who|whose|with|in|on|for|"
    r"from|by|as|than|is|are|was|were|be|their|its|very|more|most)|\ba)\s*$"
)
# Words that show a text is about a user's taste: the user (whole words), a preference or what
# replies are like (word beginnings).
_TASTE_WORDS = re.compile(
    r"\b(user|users|they|them|their|themselves|he|him|his|she|her|i|me|my|we|us|our|person|someone|"
    r"somebody|individual|people|reader)\b"
    r"|\b(prefer|like|love|enjoy|valu|want|wish|appreciat|favo|dislike|hate|avoid|care|interest|"
    r"expect|need|seek|rather|fond|keen|taste|priorit|emphasi|gravitat|toleran|annoy|frustrat|"
    r"irritat|impatien|skeptic|trust|averse|aversion|satisf|bother|respond|repl|answer|explanation|"
    r"tone|style|format|length|detail|example|list|bullet|summar|brevity|brief|concise|verbose|"
    r"short|long|direct|formal|casual|friendly|warm|jargon|hedg|padding|filler)",
    re.IGNORECASE,
)


JUDGE_DIRECTIONS_PROBLEM = "gives the judge directions"


def persona_problem(text: str) -> str | None:
    """Say why `text` is not a persona (a description of one user's taste); None when it is one.

    Refused: directions to the judge, a word or two, a phrase that loops, a text cut off
    mid-sentence, and a text that mentions neither the user, nor a preference, nor what replies
    are like.
    """
    found = _JUDGE_DIRECTIONS.search(text)
    if found:
        return f"{JUDGE_DIRECTIONS_PROBLEM} ({found.group(0)[:60]!r}); a persona describes the user's taste"
    words = [word.lower() for word in _WORD.findall(text)]
    if len(words) < MIN_PERSONA_WORDS:
        return (
            f"is {len(words)} word{'' if len(words) == 1 else 's'} ({text.strip()[:40]!r}); a persona "
            f"describes the user's taste in at least {MIN_PERSONA_WORDS} words"
        )
    loop = _repeated_phrase(words)
    if loop:
        return f"repeats itself ({loop!r} comes back); a persona states each taste once"
    cut = _FRAGMENT_END.search(text)
    if cut:
        return f"breaks off mid-sentence (it ends with {text.rstrip()[-30:]!r})"
    if not _TASTE_WORDS.search(text):
        return (
            f"mentions neither the user nor any preference ({text.strip()[:60]!r}); a persona "
            "describes what the user values in replies"
        )
    return None


def _repeated_phrase(words: list[str]) -> str | None:
    """Return a phrase that makes `words` a loop, or None."""
    seen: set[tuple[str, ...]] = set()
    for start in range(len(words) - LOOP_WORDS + 1):
        phrase = tuple(words[start : start + LOOP_WORDS])
        if phrase in seen:
            return " ".join(phrase)
        seen.add(phrase)
    triples = [tuple(words[start : start + 3]) for start in range(len(words) - 2)]
    if len(triples) >= 4 and len(set(triples)) < MIN_DISTINCT_SHARE * len(triples):
        return " ".join(Counter(triples).most_common(1)[0][0])
    return None


def check_persona_text(value: str) -> str:
    """Reject text that is not a description of a user's taste (see `persona_problem`)."""
    problem = persona_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def check_user_id(value: str, *, max_chars: int = DEFAULT_LIMITS.max_id_chars) -> str:
    """Reject user ids that are empty, too long or outside a safe character set."""
    if not value or len(value) > max_chars:
        raise ValueError(f"must be 1-{max_chars} characters")
    if not all(ch.isalnum() or ch in "-_.@:" for ch in value):
        raise ValueError("may only hold letters, digits and - _ . @ :")
    return value


class Turn(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str

    @field_validator("content")
    @classmethod
    def _content(cls, value: str, info: ValidationInfo) -> str:
        return check_text(value, max_chars=_limits(info).max_text_chars)


def pair_content_id(context: list[Turn] | tuple[Turn, ...], chosen: str, rejected: str) -> str:
    """Return the stable content hash that identifies a pair within one user's memory."""
    canonical = json.dumps(
        [[[turn.role, turn.content] for turn in context], chosen, rejected],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


class PreferencePair(BaseModel):
    """A user's choice between two replies to the same conversation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field("", description="Content hash of context, chosen and rejected; computed when absent.")
    user_id: str
    context: tuple[Turn, ...] = Field(description="The conversation so far; ends with a user turn.")
    chosen: str = Field(description="The reply the user preferred.")
    rejected: str = Field(description="The reply the user did not prefer.")
    created_at: datetime = Field(default_factory=utc_now)
    source: PairSource = "explicit"
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str, info: ValidationInfo) -> str:
        return check_user_id(value, max_chars=_limits(info).max_id_chars)

    @field_validator("context")
    @classmethod
    def _context(cls, value: tuple[Turn, ...], info: ValidationInfo) -> tuple[Turn, ...]:
        limits = _limits(info)
        if not value:
            raise ValueError("must hold at least one user turn")
        if len(value) > limits.max_context_turns:
            raise ValueError(f"has {len(value)} turns, over the limit of {limits.max_context_turns}")
        if value[-1].role != "user":
            raise ValueError("must end with a user turn")
        return value

    @field_validator("chosen", "rejected")
    @classmethod
    def _reply(cls, value: str, info: ValidationInfo) -> str:
        return check_text(value, max_chars=_limits(info).max_text_chars)

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, MetadataValue], info: ValidationInfo) -> dict[str, MetadataValue]:
        limit = _limits(info).max_metadata_items
        if len(value) > limit:
            raise ValueError(f"has {len(value)} keys, over the limit of {limit}")
        for key, item in value.items():
            if not key or len(key) > 64:
                raise ValueError(f"key {key[:20]!r} must be 1-64 characters")
            if isinstance(item, str) and len(item) > 1_000:
                raise ValueError(f"value of {key!r} is over 1000 characters")
        return value

    @model_validator(mode="after")
    def _identity(self) -> PreferencePair:
        if self.chosen.strip() == self.rejected.strip():
            raise ValueError("chosen and rejected must differ")
        expected = pair_content_id(self.context, self.chosen, self.rejected)
        if not self.id:
            object.__setattr__(self, "id", expected)
        elif self.id != expected:
            raise ValueError(f"id {self.id!r} does not match the pair's content (expected {expected!r})")
        return self

    @property
    def weight(self) -> float:
        """Return how much this pair counts in a fit (`SOURCE_WEIGHTS` by its source)."""
        return SOURCE_WEIGHTS[self.source]

    @property
    def inferred(self) -> bool:
        """True when the preference is inferred from what the user did (an edit, a regenerate), not picked."""
        return self.weight < SOURCE_WEIGHTS["explicit"]

    @property
    def query(self) -> str:
        """The last user message: what the chosen and rejected replies answer."""
        return self.context[-1].content


class Reasoning(BaseModel):
    """A default judge's explanation of one training pair, and whether it predicted the user's choice."""

    model_config = ConfigDict(frozen=True)

    pair_id: str
    text: str
    predicted: Literal["chosen", "rejected", "tie"]

    @property
    def verified(self) -> bool:
        """True when the reasoning predicted the reply the user really chose."""
        return self.predicted == "chosen"


class Demo(BaseModel):
    """A stored pair shown to the judge as an example of this user's taste, and why it was picked."""

    model_config = ConfigDict(frozen=True)

    pair: PreferencePair
    reasoning: str | None = None
    similarity: float | None = None
    informativeness: float | None = None
    score: float | None = None
    why: str = ""


class Persona(BaseModel):
    """A short natural-language description of what one user values in replies, with provenance."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    text: str
    version: int = Field(0, ge=0, description="Assigned by the memory store; 0 until stored.")
    created_at: datetime = Field(default_factory=utc_now)
    model: str = ""
    pair_ids: tuple[str, ...] = ()
    demo_pair_ids: tuple[str, ...] = ()
    val_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    baseline_val_accuracy: float | None = Field(
        None, ge=0.0, le=1.0, description="The replaced persona's accuracy on the same validation pairs."
    )
    reasoning: tuple[Reasoning, ...] = ()
    source: PersonaSource = Field(
        "llm",
        description="What wrote it: SynthesizeMe (llm), the personal reward model (offline), or a "
        "starting archetype the user chose before their pairs said much (archetype).",
    )
    statements: tuple[dict[str, Any], ...] = Field(
        (),
        description="For an offline persona, the reward model's preference statements it renders "
        "(`PreferenceStatement` dumps: feature, direction, text, weights, pairs behind each).",
    )
    statement_edits: tuple[dict[str, Any], ...] = Field(
        (),
        description="The statements the user pinned, added or removed that this version keeps to, each "
        "with when it was made and what it did (`agent.persona_edits.apply_edits`).",
    )

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        # Text imitating the prompts' section tags is neutralized wherever a persona comes from.
        return escape_section_text(check_text(value, max_chars=4_000))

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return check_user_id(value)


Preference = Literal["first", "second", "tie"]


class Verdict(BaseModel):
    """A judge's decision between two replies shown as First and Second."""

    model_config = ConfigDict(frozen=True)

    preferred: Preference
    prob_first: float = Field(
        ge=0.0, le=1.0, description="Probability that the user prefers the first reply."
    )
    reasoning: str = ""
    source: Literal["logprobs", "structured", "combined", "fallback"] = "structured"


class RankedCandidate(BaseModel):
    """One candidate reply with its place in a ranking."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="Position of the candidate in the input list.")
    content: str
    score: float = Field(description="Mean probability of winning its comparisons.")
    wins: int = 0
    reasons: tuple[str, ...] = ()


class Ranking(BaseModel):
    """Candidates ordered best first, with the number of judge calls spent."""

    model_config = ConfigDict(frozen=True)

    candidates: tuple[RankedCandidate, ...]
    judge_calls: int = 0

    @property
    def best(self) -> RankedCandidate:
        """The candidate the judge expects this user to prefer."""
        return self.candidates[0]
