"""emotion_probe: exact next-word emotion distributions from language models.

This package knows nothing of agents or environments; they build on it.
Heavy libraries (torch, transformers, openai) load only when a backend is built. A backend is built
by name from the shipped config with `experiments.app.config.load_model("smollm2")`, or directly from
its class (`emotion_probe.models.providers.*`).
"""

from emotion_probe.models import ModelBackend
from emotion_probe.errors import ConfigError, EmolabError
from emotion_probe.probe import EmotionProbe
from emotion_probe.wheel import EmotionWheel

__all__ = ["ConfigError", "EmolabError", "EmotionProbe", "EmotionWheel", "ModelBackend"]
