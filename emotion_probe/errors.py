"""Exceptions that carry one clear, user-facing message."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class EmolabError(Exception):
    """Base class: bad input or configuration, reported without a traceback by the CLI."""


class ConfigError(EmolabError, ValueError):
    """A config value, data file or argument is invalid; the message names it."""


class NotSupported(EmolabError):
    """The model cannot do what the run asks of it (e.g. score continuations on a chat-only provider)."""


class TokenizationMismatch(EmolabError):
    """A continuation does not tokenize as a clean extension of its prompt."""


class ScriptExhausted(EmolabError):
    """The scripted test backend was asked for more responses than its script holds."""


def first_validation_problem(err: "ValidationError", prefix: str = "") -> str:
    """The first problem in a pydantic ValidationError as 'dotted.field: message', on one line.

    A key that is not plain printable text (a key in a data file may hold a newline) is quoted, so an
    error stays the one line the CLI promises.
    """
    first = err.errors()[0]
    field = ".".join([*filter(None, [prefix]), *(_printable(part) for part in first["loc"])]) or "<root>"
    return f"{field}: {' '.join(str(first['msg']).split())}"


def _printable(part: object) -> str:
    text = str(part)
    return text if text and text.isprintable() and text == text.strip() else repr(text)
