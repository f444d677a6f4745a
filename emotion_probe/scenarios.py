"""Scenario files (JSONL, or .txt sentence files): validated on the way in, with errors that name the line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from emotion_probe.data import resolve_data_file
from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.limits import InputLimits

log = logging.getLogger(__name__)


class Scenario(BaseModel):
    """One emotional text; `emotion`/`primary` are present in labelled sets only."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    text: str
    emotion: str | None = None
    primary: str | None = None
    #: Provenance: "hand-written" (possibly "hand-written (rewritten: why)"), or the model and the
    #: writer prompt's fingerprint for rows from experiment=generate_scenarios.
    source: str | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str, info: ValidationInfo) -> str:
        if not text.strip() and not (info.context or {}).get("allow_empty"):
            raise ValueError("text is empty (keep_empty=true keeps empty rows)")
        return text


class RowSelection(BaseModel):
    """Which rows of a scenario file a run reads: the `limit` and `keep_empty` keys of the experiments
    that read one (conf/experiment/*.yaml holds their defaults)."""

    # Strict: limit=true or limit=2.5 is a mistake, not a number of rows.
    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int | None = Field(ge=1, description="read only the first N rows kept; null = every row")
    keep_empty: bool | None = Field(
        description="null: each format's own rule (a .txt sentence file, the authors' format, keeps every row; a "
                    "JSONL row with an empty text is refused) | true: keep empty rows and repeated sentences | "
                    "false: drop them from a .txt file (counted in the log and the run's manifest)")


class ScenarioList(list):
    """The scenarios of a file, in file order, and `dropped`: what reading them left out.

    `dropped` is {"empty": rows without a word, "repeated": repeated sentences, "rows_read": rows of the
    file read (up to `limit`)}, the record a run's manifest keeps as `dropped_rows`.
    """

    def __init__(self, scenarios: list[Scenario], dropped: dict[str, int]):
        super().__init__(scenarios)
        self.dropped = dropped


def load_scenarios(name_or_path: str | Path, limit: int | None = None, keep_empty: bool | None = None,
                   limits: InputLimits | None = None) -> ScenarioList:
    """Read a bundled scenario set by name ("shaver_labelled"), a JSONL path or a plain-text path.

    JSONL rows need `text`; `id` defaults to "line-<n>" and the authors' `label` is read as `emotion`
    (their recognition_scenarios.jsonl). A `.txt` file holds one sentence per line (their
    hierarchy_prompts.txt), id "line-<n>", and every physical row is kept, empty and repeated ones
    included, as the authors scored them, unless `keep_empty=False`, which drops those rows and logs how
    many. `limit` counts the rows kept. See RowSelection.

    The file is read under `limits` (None: conf/limits/default.yaml's): a line, the file's lines, JSON
    nesting and each scenario's text are capped before any model sees them.
    """
    try:
        selection = RowSelection.model_validate({"limit": limit, "keep_empty": keep_empty})
    except ValidationError as err:
        raise ConfigError(f"{first_validation_problem(err)} (limit: null or at least 1; keep_empty: true, false "
                          "or null)") from None
    limits = limits or InputLimits.shipped()
    path = resolve_data_file("scenarios", name_or_path)
    text = limits.read_text(path)
    if path.suffix == ".txt":
        scenarios = _sentences(text, selection.keep_empty is not False, selection.limit)
    else:
        scenarios = _jsonl(path, text, selection.keep_empty is True, selection.limit, limits)
    if not scenarios:
        raise ConfigError(f"{path}: holds no scenarios")
    for scenario in scenarios:
        limits.check_text(scenario.text, f"{path}: scenario {scenario.id!r}: text")
    if scenarios.dropped["empty"] or scenarios.dropped["repeated"]:
        log.warning("%s: kept %d of %d rows read: dropped %d empty and %d repeated (keep_empty=false; null or true "
                    "keeps every row)%s", path, len(scenarios), scenarios.dropped["rows_read"],
                    scenarios.dropped["empty"], scenarios.dropped["repeated"],
                    f"; limit={selection.limit} counted kept rows" if selection.limit is not None else "")
    return scenarios


def _sentences(text: str, keep_empty: bool, limit: int | None) -> ScenarioList:
    # Physical lines as Python's text mode reads them (\n, \r\n or \r), not str.splitlines(), which
    # would also split inside a sentence at characters such as U+2028.
    lines = io.StringIO(text, newline=None).read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new row
    scenarios, seen = [], set()
    dropped = {"empty": 0, "repeated": 0, "rows_read": 0}
    for number, line in enumerate(lines, start=1):
        dropped["rows_read"] = number
        sentence = line.strip()
        if not keep_empty and (not sentence or sentence in seen):
            dropped["repeated" if sentence else "empty"] += 1
            continue
        seen.add(sentence)
        scenarios.append(Scenario.model_validate({"id": f"line-{number}", "text": line},
                                                 context={"allow_empty": keep_empty}))
        if limit is not None and len(scenarios) >= limit:
            break
    return ScenarioList(scenarios, dropped)


def _jsonl(path: Path, text: str, keep_empty: bool, limit: int | None, limits: InputLimits) -> ScenarioList:
    """The rows of a JSON Lines file; blank lines are no rows, and no row is dropped (an empty text is refused
    unless `keep_empty`)."""
    scenarios: list[Scenario] = []
    seen: set[str] = set()
    # Lines end at \n only, as JSON Lines says (a \r before it is JSON whitespace): str.splitlines() would
    # also split at characters a JSON string may hold as they are, such as U+2028, and misread the row.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = limits.loads(line)
            if isinstance(record, dict):
                record.setdefault("id", f"line-{number}")
                if "label" in record and "emotion" not in record:
                    record["emotion"] = record.pop("label")
            scenario = Scenario.model_validate(record, context={"allow_empty": keep_empty})
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
        except ValidationError as err:  # before ValueError, which it is a kind of
            raise ConfigError(f"{path}: line {number}: field {first_validation_problem(err)}") from None
        except (ValueError, RecursionError) as err:  # a number of more digits than Python reads, or deep nesting
            reason = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]
            raise ConfigError(f"{path}: line {number} is not valid JSON ({reason})") from None
        if scenario.id in seen:
            raise ConfigError(f"{path}: line {number}: duplicate scenario id {scenario.id!r}")
        seen.add(scenario.id)
        scenarios.append(scenario)
        if limit is not None and len(scenarios) >= limit:
            break
    return ScenarioList(scenarios, {"empty": 0, "repeated": 0, "rows_read": len(scenarios)})
