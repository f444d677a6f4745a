"""The console view of a negotiation: streamed messages, retries, emotion bars, and the running matching matrix.

One view for both ways of looking at a run: a live run feeds `LiveView` the graph's stream events,
and `emolab experiment=watch` feeds it the same events rebuilt from transcript.jsonl (`replay`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd
from rich.color import Color, blend_rgb
from rich.color_triplet import ColorTriplet
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from emotion_probe.analysis.hierarchy import cooccurrence, matching_matrix
from emotion_probe.analysis.quality import flagged_checks
from emotion_probe.terminal import printable

log = logging.getLogger("emolab.negotiation")
COLORS = {"salesperson": "cyan", "customer": "magenta", "probe": "yellow", "closing": "green"}


def shown(value: object, style: str = "") -> Text:
    """Text from a model, a scenario or a transcript as the console shows it: control characters escaped
    (emotion_probe.terminal), and never read as rich markup, so `[link=...]` in a reply stays text."""
    return Text(printable(value), style=style)


def emotion_bars(rows: dict[str, list[float] | None], emotions: Sequence[str]) -> Table:
    """One row per emotion (the run's primaries), one bar column per source (self-report, prediction, probe),
    in percent."""
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("emotion")
    for source in rows:
        table.add_column(source)
    for i, emotion in enumerate(emotions):
        cells = []
        for values in rows.values():
            if values is None or i >= len(values):
                cells.append(Text("-", style="dim"))
            else:
                cells.append(Text("█" * round(values[i] / 5), style="bold") + Text(f" {values[i]:.0f}", style="dim"))
        table.add_row(shown(emotion), *cells)
    return table


#: Heatmap colours of a matching cell, from P = 0 to P = 1.
_COLD, _HOT = ColorTriplet(25, 25, 60), ColorTriplet(250, 200, 40)
#: A failed turn's raw text is shown cut to this many characters.
RAW_PREVIEW = 80


def _heat(value: float) -> Style:
    background = blend_rgb(_COLD, _HOT, min(max(value, 0.0), 1.0))
    return Style(color="black" if value > 0.5 else "white", bgcolor=Color.from_triplet(background))


def matching_heatmap(C: np.ndarray, title: str, emotions: Sequence[str]) -> Table:
    """The matching matrix P(column | row) between the primaries `emotions` of a co-occurrence matrix,
    cells coloured by value.

    A row whose primary never co-occurred with another is undefined and shows dashes.
    """
    matching, totals = matching_matrix(C), np.asarray(C).sum(axis=1)
    table = Table(title=shown(title), title_justify="left", box=None, pad_edge=False, show_header=True)
    table.add_column("P(col | row)")
    for emotion in emotions:
        table.add_column(shown(emotion), justify="right")
    for i, emotion in enumerate(emotions):
        if totals[i] <= 0:
            cells = [Text("-", style="dim") for _ in emotions]
        else:
            cells = [Text("·", style="dim") if i == j else Text(f"{matching[i, j]:.2f}", style=_heat(matching[i, j]))
                     for j in range(len(emotions))]
        table.add_row(shown(emotion), *cells)
    return table


def _preview(text: str, limit: int = RAW_PREVIEW) -> str:
    flat = printable(" ".join(str(text).split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class LiveView:
    """Renders stream events. Streams tokens on a terminal; logs one line per turn otherwise.

    `emotions` names the values of reports, predictions and the probe (the run's wheel's primaries);
    a record that carries its own `emotions` labels is shown with those. Values that no label names
    (a transcript written without labels, watched without its job's config) are shown by position.
    """

    def __init__(self, console: Console | None = None, live: bool | None = None,
                 emotions: Sequence[str] | None = None):
        self.console = console or Console()
        self.live = self.console.is_terminal if live is None else live
        self.emotions: list[str] | None = list(emotions) if emotions else None
        self._streaming = False
        self._prediction: list[float] | None = None
        self._report: list[float] | None = None
        self._resumes: str | None = None  # the speaker whose next attempt streams after a retry line
        #: Per trial, the running co-occurrence of the probe's primaries over the customer's messages.
        self._cooccurrence: dict[object, np.ndarray] = {}
        self._probed: dict[object, int] = {}

    def remember(self, records: list[dict]) -> None:
        """Take in a resumed trial's earlier records without showing them, so its matching matrix runs on."""
        for record in records:
            if record.get("speaker") == "probe":
                self._accumulate(record)

    def begin_trial(self, trial: object, item: str | None = None) -> None:
        """A rule that opens a trial's block (live only; log lines carry the trial number already)."""
        if self.live:
            self._end_line()
            self.console.rule(shown(f"trial {trial}: {item}" if item else f"trial {trial}"))

    def handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start" and self.live:
            speaker = event["speaker"]
            self._end_line()
            self.console.print(Text(f"\n{printable(speaker)} ", style=f"bold {COLORS.get(speaker, 'white')}"), end="")
            self._streaming = True
            self._resumes = None
        elif kind == "token" and self.live:
            if self._resumes is not None:  # the next attempt after a retry: a block of its own
                self.console.print(Text(f"{printable(self._resumes)} ",
                                        style=f"bold {COLORS.get(self._resumes, 'white')}"), end="")
                self._streaming, self._resumes = True, None
            self.console.print(Text(printable(event["text"], newlines=True), style="dim"), end="", soft_wrap=True,
                               highlight=False)
        elif kind == "retry":
            self._retry(event)
        elif kind == "restart":
            self._restart(event)
        elif kind == "turn":
            self._turn(event["record"])
        elif kind == "probe":
            self._probe(event["record"])

    def _turn(self, record: dict) -> None:
        speaker = record["speaker"]
        if speaker == "closing":
            paid, claimed = record.get("paid"), record.get("paid_claimed")
            line = f"closing: paid {paid}" + (f" (claimed {claimed})" if claimed != paid else "")
            self._say(line, "closing")
            return
        self._end_line()
        self._resumes = None
        failed = record.get("parse_status") == "failed"
        if self.live:
            label = (f"{printable(speaker)}: ", f"bold {COLORS.get(speaker, 'white')}")
            if failed:
                errors, attempts = record.get("errors") or [], record.get("attempts")
                reason = f" ({printable(errors[-1])})" if errors else ""
                raw = _preview(record.get("raw") or record.get("text") or "")
                failure = f"parse failed after {printable(attempts)} attempt{'' if attempts == 1 else 's'}{reason}: "
                self.console.print(Text.assemble(label, (failure, "red"), (raw, "dim")), highlight=False)
            else:  # the validated message, never the raw JSON
                self.console.print(Text.assemble(label, printable(record.get("text") or "", newlines=True)),
                                   highlight=False)
        else:
            log.info("trial %s turn %s %s%s: %s", printable(record.get("trial")), printable(record.get("turn")),
                     printable(speaker), " (unparsed)" if failed else "", printable((record.get("text") or "")[:200]))
        self._learn_labels(record)
        if speaker == "salesperson":
            self._prediction = record.get("prediction")
        else:
            self._report = record.get("report")
            if record.get("decision") in ("accept", "walk_away"):
                self._say(f"customer decides: {printable(record['decision'])}", "customer")

    def _retry(self, event: dict) -> None:
        speaker = event.get("speaker", "?")
        # A replayed transcript may not know how many attempts the run allowed (its config is gone): no "/of" then.
        of = f"/{event['of']}" if event.get("of") is not None else ""
        self._notice(event, speaker, f"retry {event.get('attempt')}{of}: {event.get('reason', '')}")

    def _restart(self, event: dict) -> None:
        """A stream that broke off midway (a dropped connection) runs again from the start: the pieces shown so
        far end here, and the repeat streams as a block of its own, so no text is read twice in one line."""
        speaker = event.get("speaker", "?")
        self._notice(event, speaker, f"stream broke off ({event.get('reason', '')}); again from the start")

    def _notice(self, event: dict, speaker: str, line: str) -> None:
        """A yellow line between attempts; the next attempt's text then streams as a block of its own."""
        if self.live:
            self._end_line()
            self.console.print(shown(line, style="yellow"), highlight=False)
            self._resumes = speaker
        else:
            log.info("trial %s %s %s", printable(event.get("trial")), printable(speaker), printable(line))

    def _end_line(self) -> None:
        if self._streaming:
            self.console.print()
            self._streaming = False

    def _learn_labels(self, record: dict) -> None:
        if record.get("emotions"):
            self.emotions = list(record["emotions"])

    def _labels(self, size: int) -> list[str]:
        """The names of `size` values: the run's emotions, or positions when none name that many."""
        if self.emotions is not None and len(self.emotions) == size:
            return self.emotions
        return [f"#{i + 1}" for i in range(size)]

    def _accumulate(self, record: dict) -> object:
        trial = record.get("trial")
        self._learn_labels(record)
        primary = np.asarray(record.get("probe_primary") or [], dtype=float)
        if primary.sum() > 0:
            C = cooccurrence((primary / primary.sum())[None, :])
            before = self._cooccurrence.get(trial)
            # A record over other emotions than the trial's earlier ones (a transcript from elsewhere) starts anew.
            self._cooccurrence[trial] = C if before is None or before.shape != C.shape else before + C
        self._probed[trial] = self._probed.get(trial, 0) + 1
        return trial

    def _probe(self, record: dict) -> None:
        trial = self._accumulate(record)
        if self.live:
            self._end_line()
            rows = {"customer says": self._report, "salesperson predicted": self._prediction,
                    "probe": record.get("probe_primary")}
            labels = self._labels(max((len(values) for values in rows.values() if values is not None), default=0))
            self.console.print(emotion_bars(rows, labels))
            C = self._cooccurrence.get(trial, np.zeros((len(labels),) * 2))
            n = self._probed[trial]
            plural = "s" if n != 1 else ""
            self.console.print(matching_heatmap(C, f"matching, trial {trial}, {n} customer message{plural}",
                                                self._labels(len(C))))

    def _say(self, line: str, speaker: str) -> None:
        if self.live:
            self.console.print(shown(line, style=f"bold {COLORS[speaker]}"))
        else:
            log.info("%s", printable(line))


def replay(record: dict, attempts_allowed: int | None = None) -> list[dict]:
    """The console events a live run emitted for one transcript record, less the streamed tokens.

    A turn that took n attempts showed a retry before each of attempts 2..n, with the error of the
    attempt before it (agents.structured.call_structured), then the turn itself. `attempts_allowed`
    is the run's max_parse_retries + 1; a failed turn used them all, so it is known there anyway.
    """
    if record.get("speaker") == "probe":
        return [{"event": "probe", "record": record}]
    attempts, errors = record.get("attempts") or 1, record.get("errors") or []
    of = attempts if record.get("parse_status") == "failed" else attempts_allowed
    retries = [{"event": "retry", "speaker": record.get("speaker"), "attempt": attempt, "of": of,
                "reason": errors[attempt - 2] if attempt - 2 < len(errors) else "", "trial": record.get("trial")}
               for attempt in range(2, attempts + 1)]
    return [*retries, {"event": "turn", "record": record}]


def summary_table(trials: pd.DataFrame) -> Table:
    """The table that ends a run: one row per trial (trials.parquet). `flags` counts the quality checks that
    flagged the trial, and the caption names them per trial (a row of names would not fit 80 columns); a
    file written before the checks has no such column."""
    checked = any(column.startswith("flag_") for column in trials.columns)
    table = Table(title="Negotiation summary")
    for column in ["trial", "outcome", "price", "mean error (pp)", "JS div.", "turns", "parse failures", "truncated"]:
        table.add_column(column, justify="right")
    if checked:
        table.add_column("flags", justify="right")

    def number(value: object, spec: str) -> Text:
        if pd.api.types.is_scalar(value) and pd.isna(value):
            return Text("-")
        try:
            return Text(format(value, spec))
        except (TypeError, ValueError):  # a watched run's file holds what it holds
            return shown(value)

    named = []
    for _, row in trials.iterrows():
        flags = flagged_checks(row) if checked else []
        table.add_row(shown(row.get("trial")), shown(row.get("status")), number(row.get("price"), "g"),
                      number(row.get("mean_abs_error_pp"), ".1f"), number(row.get("js_divergence"), ".3f"),
                      shown(row.get("turns")), shown(row.get("parse_failures")), shown(row.get("truncated")),
                      *([shown(len(flags) or "-")] if checked else []))
        if flags:
            named.append(f"trial {printable(row.get('trial'))}: {', '.join(flags)}")
    if named:
        table.caption = "flagged by quality checks: " + "; ".join(named)
        table.caption_justify = "left"
    return table


def stdout_is_live() -> bool:
    return sys.stdout.isatty()
