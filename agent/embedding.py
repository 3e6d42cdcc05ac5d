"""Text embeddings: what an embedding model must offer, and one cache in front of any of them.

Texts repeat: a turn with N candidate replies yields N-1 pairs that share one context, the same
question is retrieved for again and again, and the reward model's features embed every reply of
a data set on each refit. `CachedEmbedder` keys vectors by a hash of their exact text, so each
distinct text is embedded once: a MiniLM forward pass is the largest cost of storing a pair
(BENCHMARKS.md, section 5). The memory store bounds it (least recently used vectors go);
benchmarks and scripts keep every vector and save them to a .npz file for the next run.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into an (n, d) array of vectors."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`."""
        ...


def text_key(text: str) -> str:
    """Return the cache key of a text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedEmbedder:
    """Embed texts through `model`, computing each distinct text once; safe to share between threads.

    `model` is an `Embedder` (such as `memory.embeddings.MiniLMEmbeddings`) or a LangChain
    `Embeddings` (anything with `embed_documents`). With `max_items`, only that many of the most
    recently used vectors are kept. With `path`, vectors saved there are loaded, and `save`
    writes them back.
    """

    def __init__(self, model: Any, path: str | Path | None = None, *, max_items: int | None = None) -> None:
        if not isinstance(model, Embedder) and not hasattr(model, "embed_documents"):
            raise TypeError("model needs an embed(texts) or embed_documents(texts) method")
        self.model = model
        self.path = Path(path) if path is not None else None
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            with np.load(self.path) as data:
                for key, vector in zip(data["keys"], data["vectors"], strict=True):
                    self._vectors[str(key)] = vector
            self._forget_beyond_limit()

    def __contains__(self, text: str) -> bool:
        with self._lock:
            return text_key(text) in self._vectors

    def _embed_uncached(self, texts: list[str]) -> np.ndarray:
        if isinstance(self.model, Embedder):
            vectors = np.asarray(self.model.embed(texts), dtype=np.float32)
        else:
            vectors = np.asarray(self.model.embed_documents(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"embedding model returned shape {vectors.shape} for {len(texts)} texts")
        return vectors

    def _forget_beyond_limit(self) -> None:
        while self.max_items is not None and len(self._vectors) > self.max_items:
            self._vectors.popitem(last=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`, computing only those not cached (each distinct text once per call)."""
        keys = [text_key(text) for text in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for key in keys:
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
                    found[key] = vector
        missing = list(
            dict.fromkeys((key, text) for key, text in zip(keys, texts, strict=True) if key not in found)
        )
        if missing:
            # Embed outside the lock so that one slow batch does not hold up other threads' hits.
            vectors = self._embed_uncached([text for _, text in missing])
            for (key, _), vector in zip(missing, vectors, strict=True):
                found[key] = vector
        with self._lock:
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
            for key, _ in missing:
                self._vectors[key] = found[key]
                self._vectors.move_to_end(key)
            self._forget_beyond_limit()
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[key] for key in keys])

    def save(self, path: str | Path | None = None) -> None:
        """Write the cached vectors to `path` (default: the path they were loaded from)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the embedding cache to")
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            keys = sorted(self._vectors)
            vectors = np.stack([self._vectors[key] for key in keys])
        np.savez(target, keys=np.array(keys), vectors=vectors)
