"""The LangGraph server's parts; `server.py` (what `langgraph.json` names) wires them together.

- `resources`: the store, models and graphs, built once from `Settings` and shared.
- `tokens`: bearer tokens to user ids (a tokens file, a token list, or dev mode).
- `policy`: the graph API's auth, every thread and run owned by the user that made it.
- `routes`: the memory routes under ``/memory`` and the memory inspector page.
"""
