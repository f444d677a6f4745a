"""Credentials written into a URL (`https://user:key@host/v1`, `...?api_key=...`) never reach an output.

Configs are copied into many files (the run's manifest, Hydra's .hydra/ records, job files, logs).
A key given by environment variable never enters them; a key pasted into `base_url` would, so every
writer passes what it writes through `redacted`. The client that talks to the server keeps the real URL.
"""

from __future__ import annotations

import re
from typing import Any

#: `scheme://userinfo@` : the userinfo (user, or user:password) is replaced. Hydra's sweep records escape
#: the colons (`http\://user\:key@host`), so a backslash may come before each.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*\\?://)(?P<userinfo>[^/@\s'\"]+)@")
#: Query parameters that carry secrets by convention.
_SECRET_PARAMS = re.compile(r"(?P<name>[?&](?:api[_-]?key|key|token|access[_-]?token|password|secret|sig)=)[^&\s'\"#]+",
                            re.IGNORECASE)
MASK = "***"


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAMS.sub(lambda m: f"{m['name']}{MASK}", text)


def redacted(data: Any) -> Any:
    """A copy of plain data (dicts, lists, strings) with `redact` applied to every string, keys included."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redacted(key) if isinstance(key, str) else key: redacted(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redacted(item) for item in data)
    return data
