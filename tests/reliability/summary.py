"""Figures the reliability tests produce, written as JSON under ``test-artifacts/reliability/``.

Each test records what it tried and what happened (cases, turns, fallbacks, kills); RELIABILITY.md
quotes these files. Counts accumulate over a test's run and are written when it ends.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts" / "reliability"


def write_summary(name: str, figures: dict[str, Any]) -> Path:
    """Write one test's figures to ``test-artifacts/reliability/<name>.json``; return the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    print(f"{name}: {json.dumps(figures, sort_keys=True, default=str)}")
    return path


class Tally:
    """Counts by label, written as one summary when the test is done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}

    def add(self, label: str, amount: int = 1) -> None:
        """Count `amount` more of `label`."""
        self.counts[label] += amount

    def write(self) -> Path:
        """Write the counts (and any extra figures) to the summary file."""
        return write_summary(self.name, {**dict(sorted(self.counts.items())), **self.extra})
