"""Emotion wheels: ordered emotion vocabularies grouped under primary emotions.

A wheel is data (YAML/JSON), never code. Word order is fixed and meaningful:
primaries first, then each group's secondaries in file order, so every array
of per-word values in emolab is aligned with `EmotionWheel.words`.
"""

from __future__ import annotations

import json
import unicodedata
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emotion_probe.data import resolve_data_file
from emotion_probe.errors import ConfigError, first_validation_problem


def _clean_word(word: str) -> str:
    word = word.strip()
    if not word:
        raise ValueError("empty emotion word")
    # A word is printed in tables, file names and figures: a control or format character has no place in it.
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in word):
        raise ValueError(f"emotion word {word!r} holds a control character")
    return word


class EmotionGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    primary: str = Field(description="The group's top-level emotion word")
    color: str = Field(pattern=r"^#[0-9a-fA-F]{6}$", description="Stable colour for plots")
    words: list[str] = Field(default_factory=list, description="Secondary words under the primary")

    @field_validator("primary")
    @classmethod
    def _strip_primary(cls, primary: str) -> str:
        return _clean_word(primary)

    @field_validator("words")
    @classmethod
    def _strip_words(cls, words: list[str]) -> list[str]:
        return [_clean_word(word) for word in words]


class WheelSpec(BaseModel):
    """The on-disk schema of a wheel file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    source: str = ""
    groups: list[EmotionGroup] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_duplicates(self) -> "WheelSpec":
        seen: set[str] = set()
        for group in self.groups:
            for word in [group.primary, *group.words]:
                key = word.lower()
                if key in seen:
                    raise ValueError(f"duplicated emotion word {word!r}")
                seen.add(key)
        return self


def _parse_wheel_text(path: Path, text: str) -> object:
    """A wheel file's JSON or YAML, or a ConfigError that names the file and where parsing stopped."""
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"wheel file {path} is not valid JSON (line {err.lineno}, column {err.colno}: "
                              f"{err.msg})") from None
        except RecursionError:
            raise ConfigError(f"wheel file {path} is not a wheel: nested too deeply") from None
        except ValueError as err:  # not a syntax error: a number of more digits than Python reads
            raise ConfigError(f"wheel file {path} is not valid JSON ({str(err).split(';')[0]})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"wheel file {path} is not valid YAML ({where}{err.problem or err.context})") from None
    except yaml.YAMLError as err:  # errors without a position, e.g. a control character in the text
        raise ConfigError(f"wheel file {path} is not valid YAML ({' '.join(str(err).split())})") from None
    except RecursionError:
        raise ConfigError(f"wheel file {path} is not a wheel: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:
        # PyYAML's constructors raise these for a value its grammar accepts but Python cannot build:
        # a date such as 2001-13-01, or `!!int abc`.
        reason = " ".join(str(err).split())
        raise ConfigError(f"wheel file {path} is not valid YAML (a value cannot be read: {reason})") from None


# Group colours for wheels read from a file without colours (the authors' emotion_taxonomy.json):
# the bundled Shaver wheel's colours first, so the same primaries look the same in every figure.
_TAXONOMY_COLORS = ["#e377c2", "#ffbf00", "#2ca02c", "#d62728", "#1f77b4", "#9467bd",
                    "#8c564b", "#17becf", "#bcbd22", "#7f7f7f"]


class TaxonomySpec(BaseModel):
    """The authors' taxonomy file (phys-ai/Emotion-Hierarchy-LLMs, data/emotion_taxonomy.json):
    ordered `primary_emotions` and each one's `children`; word order is theirs, as in a wheel."""

    model_config = ConfigDict(extra="forbid")

    source: str = ""
    primary_emotions: list[str] = Field(min_length=1)
    children: dict[str, list[str]]

    @model_validator(mode="after")
    def _children_match_primaries(self) -> "TaxonomySpec":
        missing = [p for p in self.primary_emotions if p not in self.children]
        extra = [c for c in self.children if c not in self.primary_emotions]
        if missing:
            raise ValueError(f"children: no entry for primary {missing[0]!r}")
        if extra:
            raise ValueError(f"children: {extra[0]!r} is not one of primary_emotions")
        return self

    def to_wheel(self, name: str) -> WheelSpec:
        groups = [{"primary": p, "color": _TAXONOMY_COLORS[i % len(_TAXONOMY_COLORS)], "words": self.children[p]}
                  for i, p in enumerate(self.primary_emotions)]
        return WheelSpec.model_validate({"name": name, "source": self.source, "groups": groups})


def _is_taxonomy(raw: object) -> bool:
    return isinstance(raw, dict) and "primary_emotions" in raw and "groups" not in raw


class EmotionWheel:
    """An ordered emotion vocabulary: `words` = primaries, then secondaries by group."""

    def __init__(self, spec: WheelSpec):
        self.spec = spec
        self.name = spec.name
        self.primaries: list[str] = [group.primary for group in spec.groups]
        self.words: list[str] = self.primaries + [w for group in spec.groups for w in group.words]
        self._primary_of = {group.primary: group.primary for group in spec.groups}
        self._primary_of.update({w: group.primary for group in spec.groups for w in group.words})
        self.group_colors: dict[str, str] = {group.primary: group.color for group in spec.groups}
        #: The name or path `load` read this wheel from, as given (None for a wheel built from a spec):
        #: EmotionProbe checks it against `probe.wheel`, which manifests record as the wheel in use.
        self.source: str | None = None

    @classmethod
    def load(cls, name_or_path: str | Path) -> "EmotionWheel":
        """Load a bundled wheel by name ("shaver", "plutchik", "ekman") or from a file path."""
        path = resolve_data_file("wheels", name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"wheel file {path} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
        raw = _parse_wheel_text(path, text)
        try:
            if _is_taxonomy(raw):  # the authors' format, read as it is
                wheel = cls(TaxonomySpec.model_validate(raw).to_wheel(path.stem))
            else:
                wheel = cls(WheelSpec.model_validate(raw))
        except ValidationError as err:
            raise ConfigError(f"invalid wheel file {path}: {first_validation_problem(err)}") from None
        wheel.source = str(name_or_path)
        return wheel

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return f"EmotionWheel({self.name!r}, {len(self.primaries)} primaries, {len(self.words)} words)"

    @cached_property
    def index(self) -> dict[str, int]:
        """Column index of each word in arrays aligned with `words`."""
        return {word: i for i, word in enumerate(self.words)}

    @cached_property
    def primary_index(self) -> np.ndarray:
        """For each word (in `words` order), the position of its primary in `primaries`."""
        return np.array([self.primaries.index(self._primary_of[w]) for w in self.words])

    def primary_mass(self, distributions: np.ndarray) -> np.ndarray:
        """Sum per-word probabilities [..., K] into their primaries' groups [..., len(primaries)]."""
        onehot = np.eye(len(self.primaries))[self.primary_index]  # [K, P]
        return np.asarray(distributions) @ onehot

    def primary_of(self, word: str) -> str:
        """The primary a word belongs to; a primary maps to itself."""
        try:
            return self._primary_of[word]
        except KeyError:
            raise ConfigError(f"{word!r} is not a word of the {self.name!r} wheel") from None

    def color_of(self, word: str) -> str:
        """The colour of the word's primary group."""
        return self.group_colors[self.primary_of(word)]

