"""Exceptions that carry one clear, user-facing message."""


class EmolabError(Exception):
    """Base class: bad input or configuration, reported without a traceback by the CLI."""


class ConfigError(EmolabError, ValueError):
    """A config value, data file or argument is invalid; the message names it."""


class TokenizationMismatch(EmolabError):
    """A continuation does not tokenize as a clean extension of its prompt."""


class ScriptExhausted(EmolabError):
    """The scripted test backend was asked for more responses than its script holds."""
