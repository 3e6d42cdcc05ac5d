"""Read and write the SynthesizeMe / PersonalRewardBench record format, and validate batches.

A record is one JSON object per line::

    {"user_id": "u1", "split": "train",
     "context": [{"role": "user", "content": "..."}],
     "chosen": {"role": "assistant", "content": "..."},
     "rejected": {"role": "assistant", "content": "..."}}

`user_id` and `split` are optional; any other keys are kept as pair metadata when they are
scalars (MT-Bench's `question_id`, `category`, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import InvalidPreference
from agent.records import DEFAULT_LIMITS, Limits, PairSource, PreferencePair

logger = logging.getLogger(__name__)

RECORD_KEYS = {"user_id", "split", "context", "chosen", "rejected"}
MAX_LINE_CHARS = 2_000_000


def describe_validation_error(error: ValidationError) -> str:
    """Turn a pydantic error into one line per problem, each naming the field."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(loc) for loc in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _reply_text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{field}: must be a string or an object with a string 'content'")


def pair_from_record(
    record: Any,
    *,
    user_id: str | None = None,
    source: PairSource = "import",
    limits: Limits = DEFAULT_LIMITS,
) -> PreferencePair:
    """Build a validated pair from one record; `user_id` overrides the record's own."""
    if not isinstance(record, Mapping):
        raise InvalidPreference(f"record must be a JSON object, not {type(record).__name__}")
    try:
        owner = user_id if user_id is not None else record.get("user_id")
        if owner is None:
            raise ValueError("user_id: missing (give it in the record or as the importing user)")
        metadata = {
            key: value
            for key, value in record.items()
            if key not in RECORD_KEYS | {"id", "created_at", "source", "metadata"}
            and isinstance(value, str | int | float | bool)
        }
        if isinstance(record.get("split"), str):
            metadata["split"] = record["split"]
        if isinstance(record.get("metadata"), Mapping):
            metadata.update(record["metadata"])
        data: dict[str, Any] = {
            "user_id": owner,
            "context": record.get("context"),
            "chosen": _reply_text(record.get("chosen"), "chosen"),
            "rejected": _reply_text(record.get("rejected"), "rejected"),
            "source": record.get("source", source),
            "metadata": metadata,
        }
        if record.get("created_at") is not None:
            data["created_at"] = record["created_at"]
        if record.get("id"):
            data["id"] = record["id"]
        return PreferencePair.model_validate(data, context={"limits": limits})
    except ValidationError as exc:
        raise InvalidPreference(describe_validation_error(exc)) from None
    except (ValueError, TypeError) as exc:
        raise InvalidPreference(str(exc)) from None


def pairs_from_records(
    records: Iterable[Any],
    *,
    user_id: str | None = None,
    source: PairSource = "import",
    limits: Limits = DEFAULT_LIMITS,
) -> list[PreferencePair]:
    """Validate a whole batch; the first bad record fails it with its position in the message."""
    pairs = []
    for position, record in enumerate(records, start=1):
        try:
            pairs.append(pair_from_record(record, user_id=user_id, source=source, limits=limits))
        except InvalidPreference as exc:
            raise InvalidPreference(f"record {position}: {exc}") from None
    return pairs


def pair_to_record(pair: PreferencePair, *, with_metadata: bool = True) -> dict[str, Any]:
    """Write a pair in the PersonalRewardBench record format (plus our id, time and source)."""
    record: dict[str, Any] = {
        "user_id": pair.user_id,
        "context": [turn.model_dump() for turn in pair.context],
        "chosen": {"role": "assistant", "content": pair.chosen},
        "rejected": {"role": "assistant", "content": pair.rejected},
    }
    if "split" in pair.metadata:
        record["split"] = pair.metadata["split"]
    if with_metadata:
        record["id"] = pair.id
        record["created_at"] = pair.created_at.isoformat()
        record["source"] = pair.source
        extra = {key: value for key, value in pair.metadata.items() if key != "split"}
        if extra:
            record["metadata"] = extra
    return record


def parse_jsonl(text: str) -> Iterator[Any]:
    """Yield the JSON value of each non-blank line, failing with the line number."""
    # JSONL lines end at "\n" only: `splitlines` would also cut at U+2028, U+0085 and friends,
    # which JSON leaves unescaped inside strings (``ensure_ascii=False`` writes them raw).
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            raise InvalidPreference(f"line {number}: longer than {MAX_LINE_CHARS} characters")
        try:
            yield json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InvalidPreference(f"line {number}: not valid JSON ({exc})") from None


def read_pairs(
    path: str | Path,
    *,
    user_id: str | None = None,
    source: PairSource = "import",
    limits: Limits = DEFAULT_LIMITS,
    skip_invalid: bool = False,
) -> list[PreferencePair]:
    """Read and validate every pair of a JSONL file.

    By default the file is all or nothing. Data sets for evaluation hold a few unusable votes
    (an empty reply, say); `skip_invalid=True` drops those with one logged warning.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPreference(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not skip_invalid:
        return pairs_from_records(parse_jsonl(text), user_id=user_id, source=source, limits=limits)
    pairs, skipped = [], []
    for position, record in enumerate(parse_jsonl(text), start=1):
        try:
            pairs.append(pair_from_record(record, user_id=user_id, source=source, limits=limits))
        except InvalidPreference as exc:
            skipped.append(f"record {position}: {exc}")
    if skipped:
        logger.warning("%s: skipped %d invalid records (first: %s)", path, len(skipped), skipped[0])
    return pairs


def split_of(pair: PreferencePair) -> str | None:
    """Return the pair's data split (train, val, test, population) when the source gave one."""
    split = pair.metadata.get("split")
    return split if isinstance(split, str) else None
