"""`agent` exposes its public names in one place, each loaded from the module that defines it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import agent


def test_every_public_name_loads_from_its_home() -> None:
    assert sorted(agent._HOMES) == sorted(agent.__all__)
    for name in agent.__all__:
        value = getattr(agent, name)
        assert value is getattr(importlib.import_module(agent._HOMES[name]), name), name


def test_type_checkers_see_the_same_names_as_the_runtime() -> None:
    tree = ast.parse(Path(agent.__file__).read_text(encoding="utf-8"))
    guarded = next(node for node in tree.body if isinstance(node, ast.If))
    seen = {
        alias.name: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == agent._HOMES


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        agent.Nothing  # noqa: B018
