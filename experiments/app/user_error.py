"""How the app ends a run that the user must fix: one `error:` line on stderr, then exit code USER_ERROR."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from emotion_probe.redaction import redact
from emotion_probe.terminal import printable

#: The exit code of a run stopped for the user to fix something.
USER_ERROR = 2


def report_error(message: str, details: str = "") -> None:
    """`error: <message>` on stderr, then `details` below it, if any."""
    # One unwrapped line, and no markup parsing: messages quote user text like "[x]".
    # Masked and escaped: messages quote file contents and paths, which may carry keys or terminal controls.
    message, details = printable(redact(message)), printable(redact(details), newlines=True)
    console = Console(stderr=True, soft_wrap=True)
    console.print(Text.assemble(("error: ", "bold red"), message))
    if details:
        console.print(Text(details))
