"""Benchmarks behind `persona-agent bench`: accuracy, cost and latency (see BENCHMARKS.md).

- `accuracy`: PersonalRewardBench-style pairwise accuracy per user, macro over users.
- `cost`: LLM calls and tokens of one fit and one chat turn, on an instant scripted model.
- `latency`: per-turn overhead of the chat graph outside the model.
- `llm_cache`: the on-disk LLM result cache that lets an interrupted accuracy run resume.
- `scripted_model`: the instant scripted model the cost and latency suites run on.
- `scaleout`: several app processes over one PostgreSQL and one Chroma server (`scripts/scaleout_check.py`).
- `ports`: a free loopback port for the servers a benchmark starts.
"""
