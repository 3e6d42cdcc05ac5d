"""Deterministic fake embedders: no model weights, the same vector for the same text."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np


class WordHashEmbeddings:
    """A deterministic bag-of-words embedding: texts sharing words get similar unit vectors."""

    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions
        self.calls = 0
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts by hashing their lower-cased words into buckets."""
        self.calls += 1
        self.texts += len(texts)
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                bucket = int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimensions
                out[row, bucket] += 1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class HashEmbedder:
    """A deterministic fake embedder: unit vectors seeded by each text's hash; counts texts embedded."""

    def __init__(self, dimensions: int = 8) -> None:
        self.dimensions = dimensions
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as pseudo-random unit vectors."""
        self.embedded.extend(texts)
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=self.dimensions)
            rows.append(vector / np.linalg.norm(vector))
        return np.array(rows, dtype=np.float32)
