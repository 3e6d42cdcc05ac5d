"""One embedding cache for the memory store and the reward model's features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from agent.embedding import CachedEmbedder


class CountingEmbeddings:
    """A LangChain-style embedding model (``embed_documents``) that records what it embedded."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        self.seen.extend(texts)
        return [[float(len(text)), 1.0] for text in texts]


def test_a_bounded_cache_forgets_the_least_recently_used_text() -> None:
    model = CountingEmbeddings()
    cache = CachedEmbedder(model, max_items=2)
    cache.embed(["a", "bb"])
    cache.embed(["a"])  # "a" is now the most recent
    cache.embed(["ccc"])  # "bb" goes
    assert ("a" in cache, "bb" in cache, "ccc" in cache) == (True, False, True)
    vectors = cache.embed(["bb", "a", "bb"])
    assert model.seen == ["a", "bb", "ccc", "bb"]  # each distinct text of a call embedded once
    assert vectors.tolist() == [[2.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
    assert (cache.hits, cache.misses) == (3, 4)


def test_a_model_that_cannot_embed_is_refused() -> None:
    with pytest.raises(TypeError, match="embed_documents"):
        CachedEmbedder(object())


def test_a_model_returning_the_wrong_shape_fails_clearly() -> None:
    class Broken:
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return np.zeros((1, 3))

    with pytest.raises(ValueError, match=r"shape \(1, 3\) for 2 texts"):
        CachedEmbedder(Broken()).embed(["a", "b"])
