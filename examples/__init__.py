"""Runnable examples of embedding persona-agent's parts in other LangGraph and LangChain code."""
