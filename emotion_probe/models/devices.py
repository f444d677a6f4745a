"""Where an in-process model runs and at what precision: `auto` resolved for this machine.

TransformersBackend resolves its `device` and `dtype` settings with these when it loads, and the
wrappers resolve a model config with them before it loads (a resume check, a response-cache key), so
both read `auto` the same way. torch is imported only when asked.
"""

from __future__ import annotations

from typing import Any

from emotion_probe.errors import ConfigError

#: The dtype spellings a model config may use, and the torch dtype each names.
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16",
          "fp16": "float16"}


def pick_device(device: str) -> str:
    """`device` as given, or for `auto` cuda where a GPU is available, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    """The torch dtype `dtype` names on `device`; `auto` is bfloat16 on cuda, float32 elsewhere."""
    import torch

    if dtype == "auto":
        # bf16 halves memory and doubles throughput on GPUs; CPUs are fastest and exact in fp32.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype: unknown dtype {dtype!r}; expected auto or one of {sorted(DTYPES)}")
    return getattr(torch, DTYPES[dtype])
