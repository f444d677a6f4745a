"""Shared fixtures. The embedded model loads once per session (its first-ever load converts the GGUF)."""

from __future__ import annotations

import os

import pytest

# Tests never reach for the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2():
    from emotion_probe.backends.smollm2 import load_smollm2

    return load_smollm2()


@pytest.fixture(scope="session")
def shaver():
    from emotion_probe import EmotionWheel

    return EmotionWheel.load("shaver")


@pytest.fixture(scope="session")
def tiny_llama():
    """A randomly initialised 2-layer Llama built from a config: fast, offline, exactness checks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()
