"""Map bearer tokens to user ids for the server: a tokens file, a token list, or dev mode.

Tokens come from `Settings.tokens_file` (JSON ``{"token": "user_id"}``) and `Settings.tokens`
(``"tok1=alice,tok2=bob"``); both may be given and are merged. In dev mode
(``PERSONA_AGENT_AUTH=dev``) ``Bearer dev-<user>`` authenticates as ``<user>`` with no secret at
all: meant for a server on loopback, never for one others can reach. The user id a token maps to
is the only identity the server uses; a user id in a request body is never trusted.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigurationError, PersonaAgentError
from agent.records import check_user_id
from persona_agent.settings import Settings

DEV_PREFIX = "dev-"
MIN_TOKEN_CHARS = 8


class Unauthenticated(PersonaAgentError):
    """The request carried no bearer token, or one that maps to no user."""

    exit_code = 8
    http_status = 401


def _checked(token: str, user_id: str, origin: str) -> tuple[str, str]:
    if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_CHARS:
        raise ConfigurationError(f"{origin}: every token must be at least {MIN_TOKEN_CHARS} characters")
    if not isinstance(user_id, str):
        raise ConfigurationError(f"{origin}: the user id of a token must be a string")
    try:
        check_user_id(user_id)
    except ValueError as exc:
        raise ConfigurationError(f"{origin}: user id {user_id[:40]!r} {exc}") from None
    return token.strip(), user_id


def parse_token_list(text: str, *, origin: str = "PERSONA_AGENT_TOKENS") -> dict[str, str]:
    """Parse ``"tok1=alice,tok2=bob"`` into ``{token: user_id}``."""
    tokens: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        token, sep, user_id = item.strip().partition("=")
        if not sep:
            raise ConfigurationError(f"{origin}: {item.strip()[:4]}... must be written token=user_id")
        token, user_id = _checked(token, user_id.strip(), origin)
        tokens[token] = user_id
    return tokens


def read_tokens_file(path: Path) -> dict[str, str]:
    """Read a JSON object of ``{token: user_id}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"tokens file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"tokens file {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigurationError(f'tokens file {path}: must be a JSON object {{"token": "user_id"}}')
    return dict(_checked(token, user_id, f"tokens file {path}") for token, user_id in data.items())


@dataclass(frozen=True)
class TokenMap:
    """Which bearer token stands for which user; `dev` also accepts ``dev-<user>`` tokens."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    dev: bool = False

    @property
    def configured(self) -> bool:
        """True when at least one way to authenticate exists."""
        return self.dev or bool(self.tokens)

    def user_for_token(self, token: str) -> str | None:
        """Return the user a token maps to, or None."""
        found = None
        # Compare against every token in constant time so timing does not reveal a prefix.
        for known, user_id in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = user_id
        if found is None and self.dev and token.startswith(DEV_PREFIX):
            try:
                found = check_user_id(token.removeprefix(DEV_PREFIX))
            except ValueError:
                return None
        return found

    def authenticate(self, authorization: str | None) -> str:
        """Return the user id of an ``Authorization: Bearer <token>`` header, or raise Unauthenticated."""
        if not authorization:
            raise Unauthenticated("missing Authorization header (expected 'Bearer <token>')")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        user_id = self.user_for_token(token.strip())
        if user_id is None:
            raise Unauthenticated("unknown token")
        return user_id


def load_token_map(settings: Settings) -> TokenMap:
    """Build the token map from settings: tokens file, then the token list, plus dev mode."""
    tokens: dict[str, str] = {}
    if settings.tokens_file is not None:
        tokens.update(read_tokens_file(settings.tokens_file.expanduser()))
    if settings.tokens is not None:
        tokens.update(parse_token_list(settings.tokens.get_secret_value()))
    return TokenMap(tokens=tokens, dev=settings.auth == "dev")
