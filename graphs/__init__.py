"""LangGraph wiring: one module per graph, each with a `build_graph(...)` that receives its parts.

- `graphs.chat`: answer each turn with the candidate the user's judge prefers; record feedback;
  re-synthesize the persona when enough new pairs arrived (inline or deferred).
- `graphs.synthesis`: fit, gate and save a user's persona and demos from their stored pairs.
- `graphs.state`: the graphs' JSON-plain state and run context; `graphs.feedback`: what feedback
  on a turn (a pick, a pair, an edit, a regenerate) stores and changes; `graphs.judges`: which
  judge ranks a turn; `graphs.retry`: which failures the declared retry policies retry.

Each module's `build_graph` is reached through its module (`graphs.chat.build_graph`,
`graphs.synthesis.build_graph`); the names below are what callers pass to and read from them.
See docs/graph.md.
"""

from graphs import chat, synthesis
from graphs.chat import ChatOptions, synthesis_recorded
from graphs.judges import HybridJudges, JudgeFactory, LLMJudges, OfflineJudges
from graphs.state import ChatContext, ChatState, Feedback, SynthesisContext, SynthesisOutcome
from graphs.synthesis import run_synthesis

__all__ = [
    "ChatContext",
    "ChatOptions",
    "ChatState",
    "Feedback",
    "HybridJudges",
    "JudgeFactory",
    "LLMJudges",
    "OfflineJudges",
    "SynthesisContext",
    "SynthesisOutcome",
    "chat",
    "run_synthesis",
    "synthesis",
    "synthesis_recorded",
]
