"""Model providers, one file each, all behind emotion_probe.models.base.ModelBackend; SDKs load lazily."""
