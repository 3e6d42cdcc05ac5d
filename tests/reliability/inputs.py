"""Generated import batches for the bad-input tests: valid records and one seeded fault each.

A `Case` is a JSONL body (bytes) plus what must happen to it: either accepted (``problem`` is
None) or rejected with an error matching ``problem`` (a regex naming the record and field).
`cases(kind)` is a hypothesis strategy: a batch of 1-4 valid records, then one mutation of that
kind (see `KINDS`) applied to one record (or to the raw bytes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from agent.records import DEFAULT_LIMITS, Turn, pair_content_id

USER = "alice"
LIMITS = DEFAULT_LIMITS
CONTROL_CHARS = "\x01\x07\x08\x1b\x1f\x7f\x85\u2028\u2029\r\t\x0b\x0c\ufeff\u200b\u202e"
NESTED = "@nested-json@"
NOT_OBJECTS: tuple[Any, ...] = (5, "a string", None, [], True, 1.5)

KINDS = (
    "valid",
    "control_chars",
    "duplicate_record",
    "wrong_type",
    "missing_field",
    "huge_text",
    "nul_char",
    "lone_surrogate",
    "long_context",
    "mismatched_id",
    "nesting_bomb_line",
    "nesting_bomb_field",
    "not_an_object",
    "invalid_utf8",
    "too_many_metadata",
    "blank_text",
    "same_replies",
)

# Wrong-typed values per field, with the field name the error must carry.
WRONG_TYPES: tuple[tuple[str, Any, str], ...] = (
    ("chosen", 123, "chosen"),
    ("chosen", None, "chosen"),
    ("chosen", ["a", "b"], "chosen"),
    ("chosen", {"content": 5}, "chosen"),
    ("chosen", {"role": "assistant"}, "chosen"),
    ("rejected", True, "rejected"),
    ("rejected", {"content": None}, "rejected"),
    ("context", "just a string", "context"),
    ("context", {"role": "user", "content": "hi"}, "context"),
    ("context", ["plain string turn"], "context"),
    ("context", [{"role": "user", "content": 5}], "context"),
    ("context", [{"role": "wizard", "content": "hi"}], "context"),
    ("context", [{"role": "user", "content": "hi", "extra": 1}], "context"),
    ("context", [], "context"),
    ("context", [{"role": "assistant", "content": "no user turn last"}], "context"),
    ("context", 42, "context"),
    ("metadata", {"nested": {"a": 1}}, "metadata"),
    ("metadata", {"": "empty key"}, "metadata"),
    ("metadata", {"long": "x" * 1_001}, "metadata"),
    ("source", "hacker", "source"),
    ("source", 7, "source"),
    ("created_at", "yesterday", "created_at"),
    ("created_at", [2026], "created_at"),
)


@dataclass
class Case:
    """One import batch and the outcome it must have on every surface."""

    kind: str
    body: bytes
    records: list[Any] = field(default_factory=list)
    problem: str | None = None
    server_problem: str | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        """True when every surface must store this batch."""
        return self.problem is None

    def matches(self, message: str, *, server: bool = False) -> bool:
        """Say whether a rejection message names the problem this case injected."""
        pattern = (self.server_problem or self.problem) if server else self.problem
        return pattern is not None and re.search(pattern, message) is not None


_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0, max_size=30
)


@st.composite
def valid_record(draw: st.DrawFn, number: int) -> dict[str, Any]:
    """Draw a record every surface must accept (texts are prefixed, so never blank or equal)."""
    turns = draw(st.integers(1, 3))
    roles = [draw(st.sampled_from(["user", "assistant", "system"])) for _ in range(turns - 1)]
    context = [
        {"role": role, "content": f"turn {i}: {draw(_TEXT)}"} for i, role in enumerate([*roles, "user"])
    ]
    chosen: Any = f"chosen {number}: {draw(_TEXT)}"
    if draw(st.booleans()):
        chosen = {"role": "assistant", "content": chosen}
    record: dict[str, Any] = {"context": context, "chosen": chosen, "rejected": f"rejected: {draw(_TEXT)}"}
    if draw(st.booleans()):
        record["split"] = draw(st.sampled_from(["train", "val", "test"]))
    if draw(st.booleans()):
        record["question_id"] = draw(st.integers(-(10**6), 10**6))
    if draw(st.booleans()):
        record["user_id"] = "someone-else"  # the importing user always overrides this
    if draw(st.booleans()):
        record["id"] = expected_id(record)
    return record


def reply_text(value: Any) -> str:
    """Return a record's reply text (a string, or an object's content)."""
    return value if isinstance(value, str) else value["content"]


def expected_id(record: dict[str, Any]) -> str:
    """Return the content id a valid record must be stored under."""
    turns = [Turn(role=turn["role"], content=turn["content"]) for turn in record["context"]]
    return pair_content_id(turns, reply_text(record["chosen"]), reply_text(record["rejected"]))


def _insert(text: str, extra: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + extra + text[at:]


@st.composite
def cases(draw: st.DrawFn, kind: str) -> Case:
    """Draw a batch with one injected fault of `kind` ("valid": none) and its expected outcome."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    records: list[Any] = [draw(valid_record(n)) for n in range(draw(st.integers(1, 4)))]
    index = draw(st.integers(0, len(records) - 1))
    where = f"record {index + 1}: "
    record = records[index]
    ascii_only = draw(st.booleans())
    problem: str | None = None
    server_problem: str | None = None
    detail = ""
    raw_line: str | None = None
    nested_json: str | None = None

    if kind == "control_chars":
        chars = "".join(draw(st.lists(st.sampled_from(CONTROL_CHARS), min_size=1, max_size=4)))
        at = draw(st.integers(0, 40))
        record["rejected"] = _insert(record["rejected"], chars, at)
        record["context"][-1]["content"] = _insert(record["context"][-1]["content"], chars, at)
        record.pop("id", None)
        detail = repr(chars)
    elif kind == "duplicate_record":
        records.append(json.loads(json.dumps(record)))
    elif kind == "wrong_type":
        name, value, field_name = draw(st.sampled_from(WRONG_TYPES))
        record[name] = value
        record.pop("id", None)
        problem = re.escape(where) + f".*{field_name}"
        detail = f"{name}={json.dumps(value)[:40]}"
    elif kind == "missing_field":
        name = draw(st.sampled_from(["context", "chosen", "rejected"]))
        del record[name]
        record.pop("id", None)
        problem = re.escape(where) + f".*{name}"
        detail = name
    elif kind == "huge_text":
        size = LIMITS.max_text_chars + draw(st.sampled_from([1, 1_000, 200_000]))
        name = draw(st.sampled_from(["chosen", "rejected", "turn"]))
        if name == "turn":
            record["context"][-1]["content"] = "x" * size
        else:
            record[name] = "y" * size
        record.pop("id", None)
        problem = re.escape(where) + r".*over the limit"
        detail = f"{name} of {size} chars"
    elif kind == "nul_char":
        record["rejected"] = _insert(record["rejected"], "\x00", draw(st.integers(0, 40)))
        record.pop("id", None)
        problem = re.escape(where) + r".*rejected: contains a NUL"
    elif kind == "lone_surrogate":
        surrogate = draw(st.sampled_from(["\ud800", "\udfff", "\udc80"]))
        record["context"][-1]["content"] += surrogate
        record.pop("id", None)
        ascii_only = True  # JSON carries a lone surrogate only as an escape
        problem = re.escape(where) + r"context.*surrogate"
    elif kind == "long_context":
        record["context"] = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(9_999)
        ] + [{"role": "user", "content": "the last question"}]
        record.pop("id", None)
        problem = re.escape(where) + r"context: has 10000 turns, over the limit"
    elif kind == "mismatched_id":
        record["id"] = draw(st.sampled_from(["0" * 20, "not-the-content-hash", expected_id(record)[::-1]]))
        problem = re.escape(where) + r".*\bid .* does not match"
    elif kind == "nesting_bomb_line":
        depth = draw(st.sampled_from([64, 900, 5_000, 100_000]))
        raw_line = "[" * depth + "]" * depth
        problem = rf"line {index + 1}: not valid JSON|{re.escape(where)}record must be a JSON object"
        if index == 0:  # a body starting with "[" is read as one JSON array by the server
            server_problem = "body: |" + problem
        detail = f"depth {depth}"
    elif kind == "nesting_bomb_field":
        depth = draw(st.sampled_from([64, 900, 5_000, 100_000]))
        name = draw(st.sampled_from(["chosen", "context", "metadata"]))
        # Spliced in as raw text: json.dumps itself cannot write what the bomb is meant to test.
        record[name] = {"deep": NESTED} if name == "metadata" else NESTED
        record.pop("id", None)
        nested_json = "[" * depth + "1" + "]" * depth
        problem = rf"line {index + 1}: not valid JSON|{re.escape(where)}.*{name}"
        detail = f"{name} depth {depth}"
    elif kind == "not_an_object":
        value = draw(st.sampled_from(NOT_OBJECTS))
        records[index] = value
        problem = re.escape(where) + r"record must be a JSON object"
        if index == 0 and isinstance(value, list):
            server_problem = "body: |" + problem
        detail = json.dumps(value)
    elif kind == "too_many_metadata":
        for number in range(LIMITS.max_metadata_items + 8):
            record[f"extra_{number}"] = number
        record.pop("id", None)
        problem = re.escape(where) + r"metadata: has \d+ keys, over the limit"
    elif kind == "blank_text":
        record["chosen"] = draw(st.sampled_from(["", "   ", "\n\t ", "\u3000"]))
        record.pop("id", None)
        problem = re.escape(where) + r"chosen: must not be empty|" + re.escape(where) + "chosen: must be"
    elif kind == "same_replies":
        record["rejected"] = reply_text(record["chosen"]) + draw(st.sampled_from(["", " ", "\n"]))
        record.pop("id", None)
        problem = re.escape(where) + r".*chosen and rejected must differ"

    lines = [json.dumps(item, ensure_ascii=ascii_only) for item in records]
    if nested_json is not None:
        lines[index] = lines[index].replace(json.dumps(NESTED), nested_json)
        records[index] = None
    if raw_line is not None:
        lines[index] = raw_line
        records[index] = None
    body = ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))).encode(
        "utf-8", "surrogatepass"
    )
    if kind == "invalid_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\x80\x80"]))
        at = body.index(b'"rejected": "') + len(b'"rejected": "')
        body = body[:at] + bad + body[at:]
        records = []
        problem = r"not valid UTF-8"
        server_problem = r"body: must be UTF-8"
        detail = repr(bad)
    return Case(kind, body, records, problem, server_problem, detail)
