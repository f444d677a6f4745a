"""Caps on what a run reads from files (conf/limits/default.yaml), enforced as a file is read.

A file from elsewhere can be any size. Checked here, a line or a scenario too long for any model ends in
one clear error before anything is tokenized; unchecked, a single 2 MB scenario line was tokenized
against every wheel word for minutes and took gigabytes of memory. Lines are read one at a time, each
read bounded by the line cap, so a file with no newline at all costs at most that much memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emotion_probe.errors import ConfigError, first_validation_problem

#: The most bytes one character takes in UTF-8: a read of this many bytes per character holds a whole line.
_UTF8_MAX_BYTES = 4


class InputLimits(BaseModel):
    """conf/limits/*.yaml: the largest input a run reads; no defaults here, they live in the YAML."""

    model_config = ConfigDict(extra="forbid")

    scenario_chars: int = Field(ge=1, description="characters of one scenario's text (a scenario file's row, "
                                                  "a negotiation scenario's or persona's text fields)")
    line_chars: int = Field(ge=1, description="characters of one line of a file read line by line (scenario "
                                              "files, transcript.jsonl)")
    file_lines: int = Field(ge=1, description="lines of one such file")
    json_depth: int = Field(ge=1, description="nesting depth of a JSON value (objects and lists inside each "
                                              "other) in a file emolab reads")

    @classmethod
    def shipped(cls) -> InputLimits:
        """The caps of conf/limits/default.yaml, for Python callers that do not pass a run's own."""
        return _shipped()

    def check_text(self, text: str, where: str) -> str:
        """`text` when it is at most `scenario_chars` long, else a ConfigError that names `where`."""
        if len(text) > self.scenario_chars:
            raise ConfigError(f"{where}: {len(text):,} characters, more than limits.scenario_chars "
                              f"({self.scenario_chars:,}) allows")
        return text

    def read_lines(self, path: Path, start: int = 0, first: int = 1,
                   whole_only: bool = False) -> Iterator[tuple[int, str, int]]:
        """(line number, line with its newline, byte offset after it) of a UTF-8 file, one line in memory at a time.

        Reads from byte `start`, numbering the lines from `first`. Lines end at \\n only. `whole_only` stops
        before a last line without its newline (one still being written). A line longer than `line_chars`,
        more than `file_lines` lines or bytes that are not UTF-8 raise a ConfigError naming the file and line.
        """
        most_bytes = self.line_chars * _UTF8_MAX_BYTES
        with path.open("rb") as handle:
            handle.seek(start)
            number = first - 1
            while True:
                data = handle.readline(most_bytes + 1)
                if not data or (whole_only and not data.endswith(b"\n") and len(data) <= most_bytes):
                    return
                number += 1
                if number > self.file_lines:
                    raise ConfigError(f"{path}: more than {self.file_lines:,} lines (limits.file_lines)")
                if len(data) > most_bytes:
                    raise self._too_long(path, number)
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ConfigError(f"{path}: line {number} is not valid UTF-8 ({err.reason})") from None
                if len(line.removesuffix("\n")) > self.line_chars:
                    raise self._too_long(path, number)
                yield number, line, handle.tell()

    def _too_long(self, path: Path, number: int) -> ConfigError:
        return ConfigError(f"{path}: line {number} is longer than {self.line_chars:,} characters "
                           "(limits.line_chars)")

    def read_text(self, path: Path) -> str:
        """The whole of a UTF-8 file, read under the line caps of `read_lines`."""
        return "".join(line for _, line, _ in self.read_lines(path))

    def loads(self, text: str) -> Any:
        """json.loads, refusing a value nested deeper than `json_depth`.

        Raises json.JSONDecodeError for a syntax error, and ValueError (with a reason that reads after
        "not valid JSON") for nesting too deep or a number of more digits than Python reads.
        """
        try:
            value = json.loads(text)
        except RecursionError:
            raise ValueError(f"nested deeper than {self.json_depth} levels, limits.json_depth") from None
        if json_depth(value) > self.json_depth:
            raise ValueError(f"nested deeper than {self.json_depth} levels, limits.json_depth")
        return value


def json_depth(value: Any) -> int:
    """How deep objects and lists nest in a parsed JSON value (a scalar is 0, [] and {} are 1); no recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


@cache
def _shipped() -> InputLimits:
    path = resources.files("conf") / "limits" / "default.yaml"
    try:
        return InputLimits.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as err:
        raise ConfigError(f"{path}: {first_validation_problem(err)}") from None
