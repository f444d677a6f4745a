"""The emotion probe: a model's next-word distribution over an emotion wheel.

P(word | prompt) is the product of the probabilities of every token of
" " + word as it follows the prompt (exact, multi-token words included), then
renormalized over the wheel's words.

method="paper" reproduces Zhao et al.'s released pipeline instead: the raw
next-token probability of each wheel word whose token ranks among the top-k
(k=100) next tokens, zero elsewhere, never renormalized, with the rank order
kept (the hierarchy's insertion order and the recognition rule depend on it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from emotion_probe.models.base import ModelBackend, RankedToken
from emotion_probe.errors import ConfigError
from emotion_probe.wheel import EmotionWheel

log = logging.getLogger(__name__)


class ProbeSettings(BaseModel):
    """Every tunable of the probe (the `probe:` config group), validated once per run.

    No field has a default: the defaults live only in conf/probe/default.yaml. From Python, get them
    with `experiments.app.config.probe_settings(**overrides)`.
    """

    model_config = ConfigDict(extra="forbid")

    wheel: str = Field(description="bundled wheel name (shaver, plutchik, ekman) or path to a wheel YAML/JSON file; "
                                   "the probe is given the wheel loaded from it")
    template: str = Field(description="the prompt; {text} is replaced by the scenario")
    method: Literal["exact", "paper"] = Field(
        description="exact: every token of each word, renormalized over the wheel | paper: the authors' pipeline, "
                    "raw probabilities of single-token words among the top-k next tokens")
    word_boundary: bool = Field(description="method=exact: also multiply in P(word ends here), so ' hope' does not "
                                            "count ' hopeless'")
    top_k: int = Field(ge=1, description="method=paper: how many next tokens are searched for wheel words")
    keep_top_k_tokens: bool = Field(
        description="method=paper: also keep each row's top-k next tokens (their text, as the model reports them) "
                    "and their probabilities, in rank order, as the list columns top_k_tokens and "
                    "top_k_probabilities, for token-level checks against the authors' top-token artifacts")
    chunk_size: int = Field(ge=1, description="scenarios per model batch and per written Parquet part")

    @field_validator("template")
    @classmethod
    def _has_text_slot(cls, template: str) -> str:
        if "{text}" not in template:
            raise ValueError("the template must contain the placeholder {text}")
        return template

    @field_validator("word_boundary")
    @classmethod
    def _boundary_needs_exact(cls, word_boundary: bool, info: ValidationInfo) -> bool:
        # `method` is declared first, so it is in info.data here unless it failed validation itself.
        if word_boundary and info.data.get("method") == "paper":
            raise ValueError("applies to method=exact only; the paper's method has no boundary term")
        return word_boundary

    @field_validator("keep_top_k_tokens")
    @classmethod
    def _top_tokens_need_paper(cls, keep: bool, info: ValidationInfo) -> bool:
        if keep and info.data.get("method") == "exact":
            raise ValueError("applies to method=paper only; the exact method reads no top-k tokens")
        return keep


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


#: Table columns the paper method adds beside the word columns (see ProbeScores).
RANKED_COLUMN = "top_k_words"
FIRST_WORD_COLUMN = "top_k_first_word"
#: ... and with keep_top_k_tokens, every top-k token, its vocabulary id and its probability, in rank order.
TOP_K_TOKENS_COLUMN = "top_k_tokens"
TOP_K_TOKEN_IDS_COLUMN = "top_k_token_ids"
TOP_K_PROBABILITIES_COLUMN = "top_k_probabilities"

# The authors' recognition rule tokenizes the concatenated top-k token strings with this pattern.
_AUTHORS_WORD_PATTERN = re.compile(r"'\s*|\w+")


@dataclass
class ProbeScores:
    """One batch of probe output.

    - probabilities: [N, K] over `wheel.words`. Exact: renormalized, rows sum to 1 (NaN where nothing
      was seen). Paper: raw next-token probabilities, zero for words outside the top-k, never renormalized.
    - ranked (paper only): per row, the wheel words found among the top-k tokens, in rank order.
    - first_word (paper only): per row, the authors' recognition answer (see `authors_first_word`), or None.
    - variant_tokens (paper only): top-k tokens dropped because a better-ranked token of the same
      word was already counted in that row (e.g. "joy" after " joy").
    - top_tokens, top_token_ids, top_probabilities (paper with keep_top_k_tokens only): per row, every
      top-k token in rank order: its decoded text, its vocabulary id (None where the backend reports
      texts only, an OpenAI-compatible server; such a backend lists two ids with one text once) and its
      raw probability. Two ids that decode to one text are two entries here; the word columns count the first.
    """

    probabilities: np.ndarray
    ranked: list[list[str]] | None = None
    first_word: list[str | None] | None = None
    variant_tokens: int = 0
    top_tokens: list[list[str]] | None = None
    top_token_ids: list[list[int | None]] | None = None
    top_probabilities: list[list[float]] | None = None


def _first_of_each_text(ranked: Sequence[RankedToken]) -> dict[str, float]:
    """{text: logprob} from ranked tokens, the likelier of two ids with one text kept: top_tokens' own answer."""
    top: dict[str, float] = {}
    for token in ranked:
        top.setdefault(token.text, token.logprob)
    return top


def authors_first_word(tokens: Sequence[str], words: set[str]) -> str | None:
    """Zhao et al.'s recognition answer: the first wheel word in the top-k tokens, read their way.

    Their code escapes each decoded token (unicode_escape), concatenates them in rank order, splits
    the result with the pattern `'\\s*|\\w+` and takes the first piece that is a wheel word,
    case-sensitively. Concatenation glues tokens without a leading space to the one before, so
    [" sad", "ness"] answers "sadness" and [" joy", "ful"] does not answer "joy"; this can differ
    from the first single-token word in rank order, and is kept because the paper's numbers use it.
    """
    text = "".join(token.encode("unicode_escape").decode("ascii") for token in tokens)
    return next((piece for piece in _AUTHORS_WORD_PATTERN.findall(text) if piece in words), None)


def _same_wheel_source(loaded_from: str, configured: str) -> bool:
    """Whether a wheel loaded from `loaded_from` is the one `probe.wheel` names: the same bundled name,
    or the same file however the path is spelled ("x.yaml", "./x.yaml", an absolute path)."""
    if loaded_from == configured:
        return True
    a, b = Path(loaded_from).expanduser(), Path(configured).expanduser()
    return a.is_file() and b.is_file() and a.resolve() == b.resolve()


class EmotionProbe:
    """Score a wheel's words as the next word after each rendered prompt.

    `wheel` is an EmotionWheel loaded once by the caller, and `settings` a validated ProbeSettings;
    neither is loaded or validated again here. From Python, take the config's defaults:

    >>> from experiments.app.config import load_model, probe_settings
    >>> settings = probe_settings()
    >>> probe = EmotionProbe(load_model("smollm2"), EmotionWheel.load(settings.wheel), settings)
    >>> probe.distribution(["I won the lottery!"]).shape
    (1, 135)
    """

    def __init__(self, model: ModelBackend, wheel: EmotionWheel, settings: ProbeSettings):
        # Type errors, not ConfigErrors: these are mistakes in the calling code, not in a user's config.
        if not isinstance(wheel, EmotionWheel):
            raise TypeError(f"EmotionProbe takes an EmotionWheel, not {type(wheel).__name__}: "
                            "load it once with EmotionWheel.load(settings.wheel) and pass the object")
        if not isinstance(settings, ProbeSettings):
            raise TypeError(f"EmotionProbe takes validated ProbeSettings, not {type(settings).__name__}: "
                            "use experiments.app.config.probe_settings(...) or ProbeSettings.model_validate(...)")
        # settings.wheel is what manifests and resume checks record, so it must name the wheel in use.
        if wheel.source is not None and not _same_wheel_source(wheel.source, settings.wheel):
            raise ConfigError(f"probe.wheel is {settings.wheel!r} but the probe was given the wheel loaded from "
                              f"{wheel.source!r}; load the wheel from probe.wheel")
        self.settings = settings
        self.model = model
        self.wheel = wheel
        self.continuations = [" " + word for word in self.wheel.words]
        #: How the last batch was scored, as the backend reported it.
        self.last_method: str | None = None
        self.last_exact: bool | None = None
        #: Paper method: top-k tokens dropped as repeats of a word already counted in their row, so far.
        self.variant_tokens = 0

    @property
    def words(self) -> list[str]:
        return self.wheel.words

    def prompts(self, texts: Sequence[str], allow_empty: bool = False) -> list[str]:
        """The rendered prompts; `allow_empty` admits empty texts (files read with keep_empty=true,
        whose empty rows the authors scored as the bare template)."""
        if isinstance(texts, str):
            raise ConfigError("distribution() takes a list of texts, not a single string")
        prompts = []
        for index, text in enumerate(texts):
            if not isinstance(text, str) or (not allow_empty and not text.strip()):
                raise ConfigError(f"text {index} is empty; every scenario needs some text to probe")
            prompts.append(self.settings.template.replace("{text}", text.strip()))
        return prompts

    def distribution(self, texts: Sequence[str]) -> np.ndarray:
        """[N, K] probabilities over `wheel.words`: each row sums to 1 (exact), or raw top-k probabilities (paper)."""
        chunks = [scores.probabilities for scores in self.iter_scores(texts)]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.words)))

    def iter_distributions(self, texts: Sequence[str]) -> Iterator[np.ndarray]:
        """Stream [chunk, K] arrays so memory stays flat over any number of texts."""
        for scores in self.iter_scores(texts):
            yield scores.probabilities

    def iter_scores(self, texts: Sequence[str], allow_empty: bool = False) -> Iterator[ProbeScores]:
        """Stream ProbeScores chunk by chunk (the paper method's rank order included)."""
        prompts = self.prompts(texts, allow_empty=allow_empty)
        for start in range(0, len(prompts), self.settings.chunk_size):
            yield self._score(prompts[start : start + self.settings.chunk_size])

    def frame(self, texts: Sequence[str], allow_empty: bool = False) -> pd.DataFrame:
        """One row per text: a column per word, plus the paper method's rank-order columns
        (RANKED_COLUMN, FIRST_WORD_COLUMN), ready to be written as a Parquet part."""
        chunks = list(self.iter_scores(texts, allow_empty=allow_empty))
        P = np.concatenate([c.probabilities for c in chunks]) if chunks else np.zeros((0, len(self.words)))
        frame = pd.DataFrame(P, columns=self.words)
        if self.settings.method == "paper":
            frame[RANKED_COLUMN] = [row for c in chunks for row in c.ranked]
            frame[FIRST_WORD_COLUMN] = [word for c in chunks for word in c.first_word]
        if self.settings.keep_top_k_tokens:
            frame[TOP_K_TOKENS_COLUMN] = [row for c in chunks for row in c.top_tokens]
            frame[TOP_K_TOKEN_IDS_COLUMN] = [row for c in chunks for row in c.top_token_ids]
            frame[TOP_K_PROBABILITIES_COLUMN] = [row for c in chunks for row in c.top_probabilities]
        return frame

    def _score(self, prompts: list[str]) -> ProbeScores:
        if self.settings.method == "paper":
            scores = self._paper_scores(prompts)
            self.last_method, self.last_exact = f"paper-top{self.settings.top_k}", False
            unseen = int((scores.probabilities.sum(axis=1) == 0).sum())
            if unseen:
                log.warning(
                    "%d of %d prompts had none of the wheel's words among the model's candidates (%s); their rows "
                    "are zero, as in the authors' pipeline", unseen, len(prompts), self.last_method,
                )
            if scores.variant_tokens:
                log.warning(
                    "%d top-k tokens repeated a word already counted in their row (e.g. 'joy' after ' joy'); "
                    "emolab keeps the better-ranked one, where the authors' graph keeps both as separate nodes",
                    scores.variant_tokens,
                )
            self.variant_tokens += scores.variant_tokens
            return scores
        result = self.model.score(prompts, self.continuations, word_boundary=self.settings.word_boundary)
        self.last_method, self.last_exact = result.method, result.exact
        probs = normalize_logprobs(result.logprobs)
        unseen = int(np.isnan(probs[:, 0]).sum())
        if unseen:
            log.warning(
                "%d of %d prompts had none of the wheel's words among the model's candidates (%s); their rows are NaN",
                unseen, len(prompts), self.last_method,
            )
        return ProbeScores(probs)

    def _paper_scores(self, prompts: list[str]) -> ProbeScores:
        """Zhao et al.'s pipeline: the top-k next tokens, in rank order, matched to the wheel their way.

        A token counts for a word when its decoded text, stripped of whitespace, equals the word exactly
        (case-sensitive: " Joy" is not "joy"), as in the authors' code. Probabilities are the model's
        own, never renormalized over the wheel.
        """
        keep = self.settings.keep_top_k_tokens
        if keep:
            # The same request with ids; the word columns read it as top_tokens would answer (first text wins).
            every = self.model.ranked_tokens(prompts, self.settings.top_k)
            top = [_first_of_each_text(ranked) for ranked in every]
        else:
            top = self.model.top_tokens(prompts, self.settings.top_k)
        index = self.wheel.index
        vocabulary = set(self.words)
        P = np.zeros((len(prompts), len(self.words)))
        ranked: list[list[str]] = []
        first_words: list[str | None] = []
        kept_tokens = [[token.text for token in row] for row in every] if keep else None
        kept_ids = [[token.id for token in row] for row in every] if keep else None
        kept_probabilities = [[float(np.exp(token.logprob)) for token in row] for row in every] if keep else None
        variants = 0
        for row, candidates in enumerate(top):
            # Rank order is descending probability; the stable sort keeps the backend's order among ties.
            tokens = [token for token, _ in sorted(candidates.items(), key=lambda item: -item[1])]
            words: list[str] = []
            for token in tokens:
                word = token.strip()
                column = index.get(word)
                if column is None:
                    continue
                if word in words:
                    variants += 1
                    continue
                P[row, column] = np.exp(candidates[token])
                words.append(word)
            ranked.append(words)
            first_words.append(authors_first_word(tokens, vocabulary))
        return ProbeScores(P, ranked, first_words, variants, kept_tokens, kept_ids, kept_probabilities)

    def describe(self) -> dict[str, object]:
        described = {**self.settings.model_dump(), "scored_with": self.last_method, "exact": self.last_exact}
        if self.settings.method == "paper":
            described["variant_tokens_dropped"] = self.variant_tokens
        return described

