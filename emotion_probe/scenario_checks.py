"""Checks every scenario must pass: it must not name its own emotion, and must not repeat another.

The paper found that LLM-written scenarios often name their own emotion ("I felt such joy"),
which makes recognition trivial. A word's forms are caught by a prefix stem plus a short list of
irregular derivatives; the stem errs on the strict side (a false alarm costs one regeneration).
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

# Derivatives that do not share the word's first letters, or share too few of them.
IRREGULAR_FORMS: dict[str, tuple[str, ...]] = {
    "anger": ("angry", "angri"), "pride": ("proud",), "shame": ("asham",), "sadness": ("sad",),
    "joy": ("enjoy",), "hate": ("hatred",), "love": ("loving", "lovin"), "fear": ("fearful",),
    "happiness": ("happy", "happi"), "envy": ("envious", "envie"), "jealousy": ("jealous",),
    "loneliness": ("lonely",), "depression": ("depress",), "frustration": ("frustrat",),
    "annoyance": ("annoy",), "irritation": ("irritat",), "agitation": ("agitat",), "aggravation": ("aggravat",),
    "disgust": ("disgust",), "satisfaction": ("satisf",), "excitement": ("excit",), "thrill": ("thrill",),
    "delight": ("delight",), "amazement": ("amaz",), "astonishment": ("astonish",), "shock": ("shock",),
    "fright": ("frighten",), "horror": ("horrif", "horrid"), "terror": ("terrif",), "panic": ("panick",),
    "nervousness": ("nervous",), "anxiety": ("anxious",), "worry": ("worri", "worried"), "distress": ("distress",),
    "humiliation": ("humiliat",), "embarrassment": ("embarrass",), "insult": ("insult",), "rejection": ("reject",),
    "isolation": ("isolat",), "neglect": ("neglect",), "alienation": ("alienat",), "defeat": ("defeat",),
    "dejection": ("deject",), "insecurity": ("insecure",), "hopelessness": ("hopeless",), "gloom": ("gloom",),
    "glumness": ("glum",), "unhappiness": ("unhapp",), "misery": ("miserab",), "melancholy": ("melanchol",),
    "dismay": ("dismay",), "disappointment": ("disappoint",), "displeasure": ("displeas",), "guilt": ("guilt",),
    "regret": ("regret",), "remorse": ("remorse",), "homesickness": ("homesick",), "sympathy": ("sympath",),
    "pity": ("piti", "pitied"), "alarm": ("alarm",), "hysteria": ("hysteric",), "mortification": ("mortif",),
    "tenseness": ("tense", "tension"), "uneasiness": ("uneas",), "apprehension": ("apprehens",), "dread": ("dread",),
    "adoration": ("ador",), "affection": ("affection",), "fondness": ("fond",), "liking": ("like",),
    "attraction": ("attract",), "caring": ("care", "cari"), "tenderness": ("tender",), "compassion": ("compassion",),
    "sentimentality": ("sentimental",), "arousal": ("arous",), "desire": ("desir",), "lust": ("lust",),
    "passion": ("passion",), "infatuation": ("infatuat",), "longing": ("long for", "longed"), "amusement": ("amus",),
    "bliss": ("bliss",), "cheerfulness": ("cheer",), "gaiety": ("gay",), "glee": ("glee",), "jolliness": ("jolly", "jolli"),
    "joviality": ("jovial",), "enjoyment": ("enjoy",), "gladness": ("glad",), "jubilation": ("jubila",),
    "elation": ("elat",), "ecstasy": ("ecstat",), "euphoria": ("euphor",), "enthusiasm": ("enthusias",),
    "zeal": ("zeal",), "zest": ("zest",), "exhilaration": ("exhilarat",), "contentment": ("content",),
    "pleasure": ("pleas",), "triumph": ("triumph",), "eagerness": ("eager",), "hope": ("hope", "hoping"),
    "optimism": ("optimis",), "enthrallment": ("enthrall",), "rapture": ("raptur",), "relief": ("reliev",),
    "rage": ("rage", "raging"), "outrage": ("outrag",), "fury": ("furious",), "wrath": ("wrath",),
    "hostility": ("hostil",), "ferocity": ("feroc", "ferocious"), "bitterness": ("bitter",), "loathing": ("loath",),
    "scorn": ("scorn",), "spite": ("spite",), "vengefulness": ("vengeful", "vengeance"), "dislike": ("dislik",),
    "resentment": ("resent",), "revulsion": ("revuls", "revolt"), "contempt": ("contempt",), "torment": ("torment",),
    "agony": ("agoniz", "agonis"), "suffering": ("suffer",), "hurt": ("hurt",), "anguish": ("anguish",),
    "despair": ("despair",), "grief": ("griev",), "sorrow": ("sorrow",), "woe": ("woeful",),
    "grouchiness": ("grouch",), "grumpiness": ("grump",), "exasperation": ("exasperat",),
    "surprise": ("surpris",),
}

_PUNCTUATION = str.maketrans("", "", string.punctuation)
# A sentence ends at . ! or ? followed by a space and a capital (or an opening quote).
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')]?\s+(?=[\"'A-Z])")
MAX_SENTENCES = 3


_ABBREVIATION = re.compile(r"\b(Dr|Mr|Mrs|Ms|Mt|St|Jr|Sr|Prof|vs|etc)\.")


def sentence_count(text: str) -> int:
    """Sentences in `text`; titles like "Dr." do not end one."""
    text = _ABBREVIATION.sub(r"\1", text.strip())
    return len(_SENTENCE_BREAK.split(text)) if text else 0


def stem(word: str) -> str:
    """The prefix that an inflection of `word` shares with it: all but the last 3 letters, at least 4."""
    word = word.lower()
    return word[: max(4, len(word) - 3)]


@lru_cache(maxsize=None)
def leak_pattern(word: str) -> re.Pattern[str]:
    forms = {stem(word), word.lower(), *IRREGULAR_FORMS.get(word.lower(), ())}
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, forms), key=len, reverse=True)) + ")", re.IGNORECASE)


def leaked_form(text: str, emotion: str) -> str | None:
    """The form of `emotion` found in `text` (e.g. "joyful" for joy), or None if the text is clean."""
    match = leak_pattern(emotion).search(text)
    if match is None:
        return None
    end = match.end()
    while end < len(text) and text[end].isalpha():
        end += 1
    return text[match.start() : end]


def normalized(text: str) -> str:
    """The key two texts must not share: case, punctuation and spacing removed."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def problems(text: str, emotion: str, seen: set[str]) -> list[str]:
    """Why a scenario for `emotion` is unacceptable (empty list = acceptable). Updates nothing."""
    found = []
    if not text.strip():
        found.append("empty text")
    if (form := leaked_form(text, emotion)) is not None:
        found.append(f"names its own emotion ({form!r})")
    if sentence_count(text) > MAX_SENTENCES:
        found.append(f"has {sentence_count(text)} sentences (at most {MAX_SENTENCES})")
    if normalized(text) in seen:
        found.append("duplicates an earlier scenario")
    return found


def label_consistency(distributions, labels: list[str], wheel, top: int = 2, calibrate: bool = True):
    """Does each labelled scenario read as its word's primary? One row per scenario.

    A model's next-word distribution over the wheel [N, K] is summed into primaries [N, P]
    (`wheel.primary_mass`); a scenario passes when its label's primary is among the `top` primaries
    with the most mass. The paper's labels are only as good as this: a "mortification" scenario that
    reads as fear trains no one to see shame. The verdict is the model's, so it is as good as the
    model: flags from a small model are prompts for a human to read the text, not proof.

    With `calibrate`, each primary's mass is first divided by its mean over the set, so a model's
    blanket preference does not decide the verdict: SmolLM2-135M puts anger and sadness in the top
    two of almost every scenario, and uncalibrated every fear, joy and love scenario would fail.

    Returns a DataFrame: label, primary, read_as (the primary with the most mass), rank (1 = the
    label's primary has the most mass) and passes.
    """
    import numpy as np
    import pandas as pd

    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    mass = wheel.primary_mass(np.asarray(distributions, dtype=float))  # [N, P]
    if calibrate:
        mean = mass.mean(axis=0)  # [P]
        mass = mass / np.where(mean > 0, mean, 1.0)  # a primary no scenario gets stays 0
    primaries = list(wheel.primaries)
    label_primary = [wheel.primary_of(label) for label in labels]
    own = mass[np.arange(len(labels)), [primaries.index(p) for p in label_primary]]  # [N]
    # Rank 1 + the number of primaries with strictly more mass: ties count in the scenario's favour.
    rank = 1 + (mass > own[:, None]).sum(axis=1)
    return pd.DataFrame({
        "label": labels,
        "primary": label_primary,
        "read_as": [primaries[i] for i in mass.argmax(axis=1)],
        "rank": rank,
        "passes": rank <= top,
    })


def words_to_rewrite(checked, min_share: float = 0.5) -> list[str]:
    """Words whose scenarios pass `label_consistency` less often than `min_share`, worst first."""
    share = checked.groupby("label")["passes"].mean()
    flagged = share[share < min_share].sort_values(kind="stable")
    return list(flagged.index)
