"""The ONNX MiniLM equals the reference sentence-transformers model on fixed texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memory.embeddings import DIMENSIONS, MiniLMEmbeddings

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


def test_vectors_equal_the_reference_model() -> None:
    reference = json.loads(REFERENCE.read_text())
    ours = MiniLMEmbeddings().embed(reference["texts"])
    expected = np.asarray(reference["vectors"], dtype=np.float32)
    assert ours.shape == expected.shape == (len(reference["texts"]), DIMENSIONS)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_batching_does_not_change_vectors() -> None:
    texts = ["short", "a somewhat longer sentence about hiking boots", "x " * 300]
    embeddings = MiniLMEmbeddings()
    together = embeddings.embed(texts)
    alone = np.vstack([embeddings.embed([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_langchain_and_chroma_interfaces_agree() -> None:
    embeddings = MiniLMEmbeddings()
    query = embeddings.embed_query("bullet points please")
    (doc,) = embeddings.embed_documents(["bullet points please"])
    (chroma,) = embeddings(["bullet points please"])
    assert len(query) == DIMENSIONS
    np.testing.assert_allclose(query, doc, atol=1e-6)
    np.testing.assert_allclose(chroma, doc, atol=1e-6)
    assert embeddings.default_space() == "cosine"
    assert MiniLMEmbeddings.build_from_config(embeddings.get_config()).model_dir == embeddings.model_dir


def test_max_tokens_cuts_long_texts_like_the_tokenizer_does() -> None:
    capped = MiniLMEmbeddings(max_tokens=128)
    # "cat" is one word piece: 128 pieces are [CLS], 126 cats and [SEP].
    np.testing.assert_allclose(capped.embed(["cat " * 300]), capped.embed(["cat " * 126]), atol=1e-6)
    assert not np.allclose(capped.embed(["cat " * 300]), MiniLMEmbeddings().embed(["cat " * 300]), atol=1e-3)
    short = "bullet points please"
    np.testing.assert_allclose(capped.embed([short]), MiniLMEmbeddings().embed([short]), atol=1e-6)


def test_max_tokens_is_validated_and_kept_in_the_chroma_config() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        MiniLMEmbeddings(max_tokens=1000)
    rebuilt = MiniLMEmbeddings.build_from_config(MiniLMEmbeddings(max_tokens=64).get_config())
    assert rebuilt.max_tokens == 64
