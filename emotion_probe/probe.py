"""The emotion probe: a model's next-word distribution over an emotion wheel.

P(word | prompt) is the product of the probabilities of every token of
" " + word as it follows the prompt (exact, multi-token words included), then
renormalized over the wheel's words. The paper's approximation (single-token
words found among the top-k next tokens) is available as method="paper".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emotion_probe.backends.base import ModelBackend
from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.wheel import EmotionWheel

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{text} The emotion in this sentence is"


class ProbeSettings(BaseModel):
    """Every tunable of the probe (the `probe:` config group), validated."""

    model_config = ConfigDict(extra="forbid")

    wheel: str = Field(default="shaver", description="bundled wheel name or path to a wheel file")
    template: str = DEFAULT_TEMPLATE
    method: Literal["exact", "paper"] = "exact"
    word_boundary: bool = False
    top_k: int = Field(default=100, ge=1)
    chunk_size: int = Field(default=64, ge=1)

    @field_validator("template")
    @classmethod
    def _has_text_slot(cls, template: str) -> str:
        if "{text}" not in template:
            raise ValueError("the template must contain the placeholder {text}")
        return template


def normalize_logprobs(logprobs: np.ndarray) -> np.ndarray:
    """Softmax each row over the wheel; rows with no finite entry become NaN (nothing was seen)."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    peak = np.max(logprobs, axis=1, keepdims=True)
    seen = np.isfinite(peak)
    weights = np.exp(logprobs - np.where(seen, peak, 0.0))
    with np.errstate(invalid="ignore"):
        probs = weights / weights.sum(axis=1, keepdims=True)
    probs[~seen[:, 0]] = np.nan
    return probs


class EmotionProbe:
    """Score a wheel's words as the next word after each rendered prompt.

    >>> probe = EmotionProbe(load_model("smollm2"), EmotionWheel.load("shaver"))
    >>> probe.distribution(["I won the lottery!"]).shape
    (1, 135)
    """

    def __init__(
        self,
        model: ModelBackend,
        wheel: EmotionWheel | str = "shaver",
        template: str = DEFAULT_TEMPLATE,
        method: Literal["exact", "paper"] = "exact",
        word_boundary: bool = False,
        top_k: int = 100,
        chunk_size: int = 64,
    ):
        wheel_name = wheel if isinstance(wheel, str) else wheel.name
        try:
            self.settings = ProbeSettings(
                wheel=wheel_name, template=template, method=method, word_boundary=word_boundary, top_k=top_k,
                chunk_size=chunk_size,
            )
        except ValidationError as err:
            raise ConfigError(first_validation_problem(err, "probe")) from None
        if method == "paper" and word_boundary:
            raise ConfigError("probe.word_boundary applies to method=exact only; the paper's method has no boundary term")
        self.model = model
        self.wheel = EmotionWheel.load(wheel) if isinstance(wheel, str) else wheel
        self.continuations = [" " + word for word in self.wheel.words]
        #: How the last batch was scored, as the backend reported it.
        self.last_method: str | None = None
        self.last_exact: bool | None = None

    @property
    def words(self) -> list[str]:
        return self.wheel.words

    def prompts(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise ConfigError("distribution() takes a list of texts, not a single string")
        prompts = []
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"text {index} is empty; every scenario needs some text to probe")
            prompts.append(self.settings.template.replace("{text}", text.strip()))
        return prompts

    def distribution(self, texts: Sequence[str]) -> np.ndarray:
        """[N, K] probabilities over `wheel.words`; each row sums to 1."""
        chunks = list(self.iter_distributions(texts))
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.words)))

    def iter_distributions(self, texts: Sequence[str]) -> Iterator[np.ndarray]:
        """Stream [chunk, K] arrays so memory stays flat over any number of texts."""
        prompts = self.prompts(texts)
        for start in range(0, len(prompts), self.settings.chunk_size):
            yield self._score(prompts[start : start + self.settings.chunk_size])

    def _score(self, prompts: list[str]) -> np.ndarray:
        if self.settings.method == "paper":
            logprobs = self._paper_logprobs(prompts)
            self.last_method, self.last_exact = f"paper-top{self.settings.top_k}", False
        else:
            result = self.model.score(prompts, self.continuations, word_boundary=self.settings.word_boundary)
            logprobs = result.logprobs
            self.last_method, self.last_exact = result.method, result.exact
        probs = normalize_logprobs(logprobs)
        unseen = int(np.isnan(probs[:, 0]).sum())
        if unseen:
            log.warning(
                "%d of %d prompts had none of the wheel's words among the model's candidates (%s); their rows are NaN",
                unseen, len(prompts), self.last_method,
            )
        return probs

    def _paper_logprobs(self, prompts: list[str]) -> np.ndarray:
        """Zhao et al.'s approximation: single-token words found in the top-k next tokens."""
        top = self.model.top_tokens(prompts, self.settings.top_k)
        index = self.wheel.index
        logprobs = np.full((len(prompts), len(self.words)), -np.inf)
        for row, candidates in enumerate(top):
            for token, logprob in candidates.items():
                column = index.get(token.strip().lower())
                if column is not None:
                    # " Joy" and " joy" are the same word to a reader: pool their mass.
                    logprobs[row, column] = np.logaddexp(logprobs[row, column], logprob)
        return logprobs

    def describe(self) -> dict[str, object]:
        return {**self.settings.model_dump(), "scored_with": self.last_method, "exact": self.last_exact}

