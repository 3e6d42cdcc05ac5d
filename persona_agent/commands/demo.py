"""`persona-agent demo`: synthesize a persona for the bundled sample user and answer two questions."""

from __future__ import annotations


def demo() -> None:
    """Learn the sample user's taste from their pairs, then answer two questions for them."""
    raise NotImplementedError
