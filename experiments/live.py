"""The live console of a negotiation: streamed messages, emotion bars, and a closing summary."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents.negotiation import PRIMARIES

log = logging.getLogger("emolab.negotiation")
COLORS = {"salesperson": "cyan", "customer": "magenta", "probe": "yellow", "closing": "green"}


def emotion_bars(rows: dict[str, list[float] | None]) -> Table:
    """One row per primary, one bar column per source (self-report, prediction, probe), in percent."""
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("emotion")
    for source in rows:
        table.add_column(source)
    for i, emotion in enumerate(PRIMARIES):
        cells = []
        for values in rows.values():
            if values is None:
                cells.append(Text("-", style="dim"))
            else:
                cells.append(Text("█" * round(values[i] / 5), style="bold") + Text(f" {values[i]:.0f}", style="dim"))
        table.add_row(emotion, *cells)
    return table


class LiveView:
    """Renders stream events. Streams tokens on a terminal; logs one line per turn otherwise."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console()
        self.live = self.console.is_terminal if live is None else live
        self._streaming = False
        self._prediction: list[float] | None = None
        self._report: list[float] | None = None

    def handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start" and self.live:
            speaker = event["speaker"]
            self.console.print(Text(f"\n{speaker} ", style=f"bold {COLORS[speaker]}"), end="")
            self._streaming = True
        elif kind == "token" and self.live:
            self.console.print(Text(event["text"], style="dim"), end="", soft_wrap=True, highlight=False)
        elif kind == "turn":
            self._turn(event["record"])
        elif kind == "probe":
            self._probe(event["record"])

    def _turn(self, record: dict) -> None:
        speaker = record["speaker"]
        if speaker == "closing":
            line = f"closing: paid {record['paid']}" + (f" (claimed {record['paid_claimed']})"
                                                        if record["paid_claimed"] != record["paid"] else "")
            self._say(line, "closing")
            return
        if self._streaming:
            self.console.print()
            self._streaming = False
        failed = record.get("parse_status") == "failed"
        if self.live:
            self.console.print(Text(f"{speaker}: ", style=f"bold {COLORS[speaker]}") + Text(record["text"]),
                               highlight=False)
            if failed:
                self.console.print(f"[red]parse failed after {record['attempts']} attempts:[/] {record['errors'][-1]}")
        else:
            log.info("trial %s turn %s %s%s: %s", record.get("trial"), record["turn"], speaker,
                     " (unparsed)" if failed else "", record["text"][:200])
        if speaker == "salesperson":
            self._prediction = record.get("prediction")
        else:
            self._report = record.get("report")
            if record.get("decision") in ("accept", "walk_away"):
                self._say(f"customer decides: {record['decision']}", "customer")

    def _probe(self, record: dict) -> None:
        if self.live:
            self.console.print(emotion_bars({"customer says": self._report, "salesperson predicted": self._prediction,
                                             "probe": record["probe_primary"]}))

    def _say(self, line: str, speaker: str) -> None:
        if self.live:
            self.console.print(Text(line, style=f"bold {COLORS[speaker]}"))
        else:
            log.info(line)


def stdout_is_live() -> bool:
    return sys.stdout.isatty()
