"""The project's exception hierarchy; the CLI and server.py map these to exit codes and HTTP statuses."""

from __future__ import annotations


class PersonaAgentError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1
    http_status = 500


class InvalidPreference(PersonaAgentError, ValueError):
    """A preference pair (or a batch of them) failed validation; nothing was stored."""

    exit_code = 2
    http_status = 422


class UnknownUser(PersonaAgentError, LookupError):
    """The user has no data in memory."""

    exit_code = 3
    http_status = 404


class NotFound(PersonaAgentError, LookupError):
    """A pair, persona version or other record does not exist for this user."""

    exit_code = 3
    http_status = 404


class Forbidden(PersonaAgentError, PermissionError):
    """The record or thread belongs to another user."""

    exit_code = 8
    http_status = 403


class NotEnoughPreferences(PersonaAgentError):
    """Too few pairs to synthesize a persona or fit a model."""

    exit_code = 4
    http_status = 409


class ConfigurationError(PersonaAgentError, ValueError):
    """A setting is missing or has a bad value."""

    exit_code = 5
    http_status = 500


class ModelOutputError(PersonaAgentError):
    """The language model kept returning output that could not be used, after retries."""

    exit_code = 6
    http_status = 502


class BudgetExceeded(PersonaAgentError):
    """A synthesis would need more LLM calls than its budget allows."""

    exit_code = 7
    http_status = 429


class PersonaRejected(PersonaAgentError, ValueError):
    """A persona text does not describe a user's taste (junk, directions to the judge); nothing stored."""

    exit_code = 2
    http_status = 422
