"""Named sections of a prompt: how user-supplied text is fenced off from instructions.

Every piece of user-supplied text (conversation turns, replies, personas, demos, reasoning) is
placed inside a named section such as ``<first_reply> ... </first_reply>`` and passed through
`escape_section_text` first, so text that imitates a section tag cannot close or open a section.
Records (`agent.records.Persona`) escape their text with it too, so this module imports neither.
"""

from __future__ import annotations

import re

SECTION_NAMES: tuple[str, ...] = (
    "persona",
    "examples",
    "example",
    "conversation",
    "turn",
    "first_reply",
    "second_reply",
    "chosen_reply",
    "rejected_reply",
    "user_chose",
    "why",
    "choices",
    "choice",
    "reasoning",
)

# Tag openers that imitate one of our sections: "<persona>", "</ first_reply", "＜turn" (full-width),
# also with invisible format characters (zero-width space, joiners, BOM) hidden inside the tag.
_GAP = r"[\s\u200b-\u200f\u2060-\u2064\ufeff]*"
_TAG_LIKE = re.compile(
    r"[<\uFF1C\uFE64](" + _GAP + "/?" + _GAP + r")(" + "|".join(SECTION_NAMES) + r")\b",
    re.IGNORECASE,
)


def escape_section_text(text: str) -> str:
    """Neutralize anything in `text` that looks like one of our section tags."""
    return _TAG_LIKE.sub(lambda match: "&lt;" + match.group(1) + match.group(2), text)


def clip(text: str, max_chars: int) -> str:
    """Shorten `text` to about `max_chars` characters, marking the cut."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars].rstrip() + f" [... {len(text) - max_chars} more characters]"


def section(name: str, text: str, *, max_chars: int | None = None, attrs: str = "") -> str:
    """Wrap user-supplied `text` in a named section, clipped and escaped."""
    if name not in SECTION_NAMES:
        raise ValueError(f"unknown section {name!r}")
    body = clip(text, max_chars) if max_chars else text
    opener = f"<{name} {attrs}>" if attrs else f"<{name}>"
    return f"{opener}\n{escape_section_text(body)}\n</{name}>"
