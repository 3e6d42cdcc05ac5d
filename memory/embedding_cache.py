"""A thread-safe LRU cache of text embeddings in front of any embedding model.

Conversation contexts repeat: a turn with N candidate replies yields N-1 pairs that share one
context, and the same question is retrieved for again and again. Keying vectors by their exact
text saves a MiniLM forward pass for each repeat, the largest cost of storing a pair
(BENCHMARKS.md, section 5).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TextEmbedder(Protocol):
    """Anything that turns texts into an (n, d) array of unit vectors."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts."""
        ...


class CachedEmbeddings:
    """Embed texts through `model`, remembering the last `max_items` vectors by exact text.

    `model` is a `TextEmbedder` (such as `MiniLMEmbeddings`) or a LangChain `Embeddings`
    (anything with `embed_documents`).
    """

    def __init__(self, model: Any, *, max_items: int = 8192) -> None:
        if not isinstance(model, TextEmbedder) and not hasattr(model, "embed_documents"):
            raise TypeError("model needs an embed(texts) or embed_documents(texts) method")
        self.model = model
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _embed_uncached(self, texts: list[str]) -> np.ndarray:
        if isinstance(self.model, TextEmbedder):
            vectors = np.asarray(self.model.embed(texts), dtype=np.float32)
        else:
            vectors = np.asarray(self.model.embed_documents(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"embedding model returned shape {vectors.shape} for {len(texts)} texts")
        return vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, computing only those not seen recently (each distinct text once per call)."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                vector = self._vectors.get(text)
                if vector is not None:
                    self._vectors.move_to_end(text)
                    found[text] = vector
        missing = list(dict.fromkeys(text for text in texts if text not in found))
        if missing:
            # Embed outside the lock so one slow batch does not block other threads' cache hits.
            for text, vector in zip(missing, self._embed_uncached(missing), strict=True):
                found[text] = vector
        with self._lock:
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
            for text in missing:
                self._vectors[text] = found[text]
                self._vectors.move_to_end(text)
            while len(self._vectors) > self.max_items:
                self._vectors.popitem(last=False)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[text] for text in texts])
