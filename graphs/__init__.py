"""LangGraph wiring: one module per graph, each with a `build_graph(...)` that receives its parts.

- `graphs.chat`: answer each turn with the candidate the user's judge prefers; record feedback;
  re-synthesize the persona when enough new pairs arrived (inline or deferred).
- `graphs.synthesis`: fit, gate and save a user's persona and demos from their stored pairs.
- `graphs.state`: the graphs' JSON-plain state and run context; `graphs.judges`: which judge
  ranks a turn; `graphs.retry`: which failures the declared retry policies retry.

See docs/graph.md.
"""
