"""The persona agent: recognizes a scenario's emotion in the voice of a persona."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from emotion_probe.limits import InputLimits
from emotion_probe.models.base import ChatMessage, GenerateConfig, ModelBackend
from emotion_probe.wheel import EmotionWheel

# The authors' layout (phys-ai/Emotion-Hierarchy-LLMs): the persona sentence starts a new line after
# the scenario, "<scenario>\nAs a woman, I think the emotion involved in this situation is".
PERSONA_TEMPLATE = "{text}\nAs {phrase}, I think the emotion involved in this situation is"
NEUTRAL_TEMPLATE = "{text}\nI think the emotion involved in this situation is"


class PersonaSpec(BaseModel):
    """A persona as configured in `conf/persona/*.yaml`: a name and the phrase put in the prompt.

    Intersectional personas give `attributes` instead; the phrase becomes "a <values in order>"
    ("a low-income disabled woman") and the name their values joined by "_".
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    phrase: str | None = None
    attributes: dict[str, str] | None = None
    #: The authors' personas.json ({name: "As <phrase>, " or "" for neutral}): `name` is looked up there.
    file: str | None = None

    @model_validator(mode="after")
    def _compose(self) -> "PersonaSpec":
        if self.file is not None:
            self.phrase = _phrase_from_file(self.file, self.name)
        if self.attributes is not None:
            values = [v.strip() for v in self.attributes.values() if v and v.strip()]
            if not values:
                raise ValueError("attributes: at least one attribute needs a value")
            if self.phrase is None:
                article = "an" if values[0][0].lower() in "aeiou" else "a"
                self.phrase = f"{article} {' '.join(values)}"
            if self.name is None:
                self.name = "_".join(re.sub(r"[^a-z0-9]+", "_", v.lower()).strip("_") for v in values)
        if not self.name:
            raise ValueError("name: a persona needs a name (or attributes to build one from)")
        if self.phrase is not None and not self.phrase.strip():
            raise ValueError("phrase: empty; use null for the neutral persona")
        return self

    @property
    def is_neutral(self) -> bool:
        return self.phrase is None


_PREFIX = re.compile(r"As (?P<phrase>.+), ", re.DOTALL)


def _phrase_from_file(path: str, name: str | None) -> str | None:
    """The phrase of persona `name` in a personas.json of prefixes ("As a woman, "; "" is no persona)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"file not found: {file}")
    try:
        prefixes = InputLimits.shipped().loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # nested too deeply or a number too long, too
        raise ValueError(f"{file} is not valid JSON ({str(err).split(';')[0]})") from None
    if not isinstance(prefixes, dict) or not all(isinstance(v, str) for v in prefixes.values()):
        raise ValueError(f"{file} must map persona names to prefix strings")
    if name not in prefixes:
        raise ValueError(f"name: {name!r} is not in {file} (has {', '.join(sorted(prefixes))})")
    prefix = prefixes[name]
    if prefix == "":
        return None
    match = _PREFIX.fullmatch(prefix)
    if match is None:
        raise ValueError(f"{file}: the prefix of {name!r} is not of the form 'As <phrase>, ': {prefix!r}")
    return match["phrase"]


@dataclass(frozen=True)
class RecognitionView:
    """What the persona is given to answer in free text: the scenario, and the model that speaks as it."""

    text: str
    model: ModelBackend
    config: GenerateConfig


@dataclass(frozen=True)
class RecognitionTurn:
    reply: str
    predicted: str | None  # the first wheel word of the reply, None when it names none


class PersonaAgent:
    """Builds the persona's probe prompt, and answers in free text as agents do: `act(view) -> turn`."""

    def __init__(self, spec: PersonaSpec, wheel: EmotionWheel):
        self.spec = spec
        self.wheel = wheel
        self._word_pattern = re.compile(
            r"\b(" + "|".join(sorted(map(re.escape, wheel.words), key=len, reverse=True)) + r")\b", re.IGNORECASE
        )

    @property
    def probe_template(self) -> str:
        """The probe scores the next word after this prompt ({text} = the scenario)."""
        if self.spec.is_neutral:
            return NEUTRAL_TEMPLATE
        return PERSONA_TEMPLATE.replace("{phrase}", self.spec.phrase)

    def chat_messages(self, text: str) -> list[ChatMessage]:
        voice = "" if self.spec.is_neutral else f"You are {self.spec.phrase}. Answer as yourself. "
        words = ", ".join(self.wheel.words)
        return [
            ChatMessage(role="system", content=voice + "You name the emotion involved in a situation with one word."),
            ChatMessage(role="user", content=f"{text}\nWhich emotion is involved in this situation? "
                                             f"Answer with one word from this list: {words}."),
        ]

    def answer_schema(self) -> dict:
        """The JSON schema of a free-text answer: one wheel word. A grammar-constrained model can
        then only name a word of the wheel; `parse_answer` reads it like any other reply."""
        return {"type": "object", "properties": {"emotion": {"type": "string", "enum": list(self.wheel.words)}},
                "required": ["emotion"], "additionalProperties": False}

    def parse_answer(self, reply: str) -> str | None:
        """The first wheel word in the reply, or None if it names none."""
        match = self._word_pattern.search(reply)
        return match.group(1).lower() if match else None

    def act(self, view: RecognitionView) -> RecognitionTurn:
        """Name the scenario's emotion in free text; a grammar-constrained model can only name a wheel word."""
        config = view.config.model_copy(update={"response_schema": self.answer_schema()})
        reply = view.model.generate(self.chat_messages(view.text), config).text
        return RecognitionTurn(reply, self.parse_answer(reply))
