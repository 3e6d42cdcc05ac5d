"""Local servers that the tests and `scripts/` start; not part of the installed package.

- `chroma_server`: a `chroma run` child process on a free port (Chroma's multi-process mode).
- `langgraph_server`: `persona-agent serve` (langgraph dev) as a child process group.
- `openai_stub`: an instant OpenAI-compatible chat server with injectable faults.
- `postgres`: a throwaway PostgreSQL cluster in a temporary folder.

Tests and scripts may import from here; nothing here imports from `tests/`, and the product
packages import nothing from here.
"""
