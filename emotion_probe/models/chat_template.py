"""A chat model's prompt as the model receives it (its chat template applied, then tokenized), without its weights.

TransformersBackend builds every prompt with `render_chat` and `prompt_token_ids`. `load_chat_template`
reads only the tokenizer that a `model:` config would load, so a preview of a prompt is the very text,
and the very token count, that a run gives the model, in a second and with no weights in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emotion_probe.models.base import ChatMessage, as_messages
from emotion_probe.errors import ConfigError


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage | dict]) -> str:
    """The prompt text of a conversation: the tokenizer's chat template over it, with the assistant's turn opened."""
    return tokenizer.apply_chat_template([m.model_dump() for m in as_messages(messages)], add_generation_prompt=True,
                                         tokenize=False)


def prompt_token_ids(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of rendered prompts. The chat template already wrote any BOS, so none is added."""
    return tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []


@dataclass(frozen=True)
class ChatTemplate:
    """A model's tokenizer, used only to render and count prompts."""

    tokenizer: Any
    #: Where the tokenizer was read from, for the reader of a preview.
    source: str

    def render(self, messages: Sequence[ChatMessage | dict]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"the tokenizer from {self.source} has no chat template, so its model cannot chat")
        return render_chat(self.tokenizer, messages)

    def count(self, text: str) -> int:
        """Tokens of `text` as it would sit inside a prompt (no BOS added)."""
        return len(prompt_token_ids(self.tokenizer, [text])[0])


def _transformers_tokenizer(where: str, path: str, gguf_file: str | None = None, trust_remote_code: bool = False,
                            **_: Any) -> ChatTemplate:
    # As TransformersBackend loads it: from local files only, never the Hub.
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["local_files_only"] = True
    try:
        return ChatTemplate(AutoTokenizer.from_pretrained(path, **kwargs), str(path))
    except OSError as err:
        raise ConfigError(f"{where}.path: cannot load a tokenizer from {path!r} (it must be a local directory or an "
                          f"HF id already in the cache; nothing is downloaded): {err}") from None


def _embedded_tokenizer(where: str, cache_dir: str | None = None, **_: Any) -> ChatTemplate:
    from emotion_probe.models.providers.smollm2 import load_embedded_tokenizer

    tokenizer, source = load_embedded_tokenizer(cache_dir)
    return ChatTemplate(tokenizer, source)


#: Backends that build their prompts in this process, by the `_target_` of their config, and how to read
#: just their tokenizer. Other backends (OpenAI-compatible servers, the scripted one) send plain messages.
_LOCAL_PROMPTS = {
    "emotion_probe.models.providers.smollm2.load_smollm2": _embedded_tokenizer,
    "emotion_probe.models.providers.smollm2.load_smollm2_random_init": _embedded_tokenizer,
    "emotion_probe.models.providers.transformers.TransformersBackend": _transformers_tokenizer,
}


def load_chat_template(node: Any, where: str = "model") -> ChatTemplate | None:
    """The chat template of the model a `model:` config node builds; None when the prompt is built elsewhere
    (a server applies its own template to the messages it is sent) or not at all (the scripted backend).

    `where` is the node's dotted name, for messages (salesperson.model, ...).
    """
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        missing = [key for key in node if OmegaConf.is_missing(node, key)]
        config = OmegaConf.to_container(node, resolve=True)
    else:
        missing, config = [], dict(node)
    loader = _LOCAL_PROMPTS.get(config.pop("_target_", None))
    if loader is None:
        return None
    if missing:
        raise ConfigError(f"{where} config needs a value for: {', '.join(missing)} (e.g. {where}.{missing[0]}=...)")
    return loader(where=where, **config)
