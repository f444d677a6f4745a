"""Where emolab keeps what it computes once and reuses: converted models, the response cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$EMOLAB_CACHE`, else the user's cache dir (e.g. ~/.cache/emolab)."""
    configured = os.environ.get("EMOLAB_CACHE")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("emolab"))
