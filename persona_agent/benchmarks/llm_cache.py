"""An on-disk cache of LLM results (SQLite), so an interrupted benchmark resumes without paying twice.

`SQLiteLLMCache` implements langchain-core's `BaseCache`. Set it on one model with
``model.cache = SQLiteLLMCache(path, namespace=...)`` (or `attach_cache`): langchain-core then
looks every call up by the serialized prompt and the model's parameters (its "llm string") and
stores each answer before returning it. The `namespace` is added to the key for settings the llm
string may not show (for instance whether log-probabilities were requested).

Each answer is committed as soon as it arrives, so a run killed midway keeps every answer it got.
Generations are stored as plain JSON (`message_to_dict`), never pickled. `hits` and `misses`
count lookups since the object was made.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_results (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    generations TEXT NOT NULL
)
"""


def _key(namespace: str, prompt: str, llm_string: str) -> str:
    return hashlib.sha256("\x00".join((namespace, llm_string, prompt)).encode("utf-8")).hexdigest()


def _dump(generations: Sequence[Generation]) -> str:
    items: list[dict[str, Any]] = []
    for generation in generations:
        if isinstance(generation, ChatGeneration):
            items.append({"message": message_to_dict(generation.message), "info": generation.generation_info})
        else:
            items.append({"text": generation.text, "info": generation.generation_info})
    return json.dumps(items, ensure_ascii=False)


def _load(text: str) -> list[Generation]:
    generations: list[Generation] = []
    for item in json.loads(text):
        if "message" in item:
            message = messages_from_dict([item["message"]])[0]
            generations.append(ChatGeneration(message=message, generation_info=item.get("info")))
        else:
            generations.append(Generation(text=item["text"], generation_info=item.get("info")))
    return generations


class SQLiteLLMCache(BaseCache):
    """A `BaseCache` over one SQLite file, safe to share between threads of one process."""

    def __init__(self, path: str | Path, *, namespace: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        # langchain-core runs the synchronous methods in executor threads for async callers.
        self._connection = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(_SCHEMA)
            self._connection.commit()

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Return the stored generations of this prompt and model, or None."""
        key = _key(self.namespace, prompt, llm_string)
        with self._lock:
            row = self._connection.execute(
                "SELECT generations FROM llm_results WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return _load(row[0])

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations of this prompt and model, committed at once."""
        key = _key(self.namespace, prompt, llm_string)
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO llm_results (key, namespace, generations) VALUES (?, ?, ?)",
                (key, self.namespace, _dump(return_val)),
            )
            self._connection.commit()

    def clear(self, **kwargs: Any) -> None:
        """Delete every result of this cache's namespace."""
        with self._lock:
            self._connection.execute("DELETE FROM llm_results WHERE namespace = ?", (self.namespace,))
            self._connection.commit()

    def __len__(self) -> int:
        with self._lock:
            row = self._connection.execute(
                "SELECT COUNT(*) FROM llm_results WHERE namespace = ?", (self.namespace,)
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()


def attach_cache(model: BaseChatModel, cache: SQLiteLLMCache | None) -> BaseChatModel:
    """Make `model` read and write `cache` (or, with None, no cache at all); return the model."""
    model.cache = cache if cache is not None else False
    return model
