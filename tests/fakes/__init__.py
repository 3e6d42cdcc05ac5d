"""Fakes and fixtures shared by the tests: no network, no model weights.

- `models`: scripted chat models (`CountingChatModel` and its kin) and the prompt readers and
  answer builders they use.
- `embeddings`: deterministic fake embedders (`WordHashEmbeddings`, `HashEmbedder`).
- `stores`: `make_pair`, `make_memory`, and the memory fixtures (`chroma_server`, `client_kind`,
  `make_store`, `store`), which a test module uses by importing their names.
- `chat`: the chat graph over fakes (`chat_responder`, `make_graph`) and the `chat_cli_fakes`
  fixture for tests of `persona-agent chat`.
- `synthesis`: persona synthesis over fakes (`taste_responder`, `liked_pairs`, `synthesis_graph`).
- `users`: synthetic users for the offline reward model (`synthetic_pairs`, `flipped`, `with_noise`,
  `with_variances`).

The local servers the tests start (Chroma, `langgraph dev`, the OpenAI stub, PostgreSQL) live in
`devtools/`, which `scripts/` use too.
"""

from tests.fakes.chat import (
    FAST,
    PERSONA_TEXT,
    STYLE_REPLIES,
    WARM,
    SlowInductionModel,
    chat_cli_fakes,
    chat_responder,
    judge_score,
    make_graph,
)
from tests.fakes.embeddings import HashEmbedder, WordHashEmbeddings
from tests.fakes.models import (
    CountingChatModel,
    MalformedChatModel,
    PositionBiasedChatModel,
    RecordedCall,
    Responder,
    ScriptedChatModel,
    Task,
    choice_logprobs,
    default_responder,
    demo_count,
    persona_message,
    persona_of,
    replies_of,
    task_of,
    tool_call_message,
    verdict_message,
)
from tests.fakes.stores import (
    CLIENT_KINDS,
    T0,
    StoreFactory,
    chroma_server,
    client_kind,
    make_memory,
    make_pair,
    make_store,
    store,
)
from tests.fakes.synthesis import BAD, GOOD, liked_pairs, pick, store_pairs, synthesis_graph, taste_responder
from tests.fakes.users import flipped, reply, synthetic_pairs, with_noise, with_variances

__all__ = [
    "BAD",
    "CLIENT_KINDS",
    "FAST",
    "GOOD",
    "PERSONA_TEXT",
    "STYLE_REPLIES",
    "T0",
    "WARM",
    "CountingChatModel",
    "HashEmbedder",
    "MalformedChatModel",
    "PositionBiasedChatModel",
    "RecordedCall",
    "Responder",
    "ScriptedChatModel",
    "SlowInductionModel",
    "StoreFactory",
    "Task",
    "WordHashEmbeddings",
    "chat_cli_fakes",
    "chat_responder",
    "choice_logprobs",
    "chroma_server",
    "client_kind",
    "default_responder",
    "demo_count",
    "flipped",
    "judge_score",
    "liked_pairs",
    "make_graph",
    "make_memory",
    "make_pair",
    "make_store",
    "persona_message",
    "persona_of",
    "pick",
    "replies_of",
    "reply",
    "store",
    "store_pairs",
    "synthesis_graph",
    "synthetic_pairs",
    "task_of",
    "taste_responder",
    "tool_call_message",
    "verdict_message",
    "with_noise",
    "with_variances",
]
