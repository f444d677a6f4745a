"""Text from outside (model replies, scenario and persona files, a received transcript) made safe to print.

A terminal acts on what it is sent: ESC starts sequences that clear the screen, move the cursor, set
the window title or wrap text in a hyperlink to anywhere; a carriage return or backspace overwrites what
was shown, and bidirectional controls reorder it. Printed as they are, such characters let a file or a
model's reply hide or fake what a person reads. `printable` shows each of them as a visible escape
(`\\x1b`, `\\u202e`), so nothing is hidden and nothing acts. Files keep the raw text: only what goes to a
console or a log passes through here. `format_cell` formats a table cell, so that every report shows a
missing value the same way.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from rich.text import Text

#: Unicode's bidirectional embedding, override and isolate controls: they reorder the text after them.
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
#: C0 controls, DEL and C1 controls (every character of Unicode category Cc), and the bidi controls.
_ESCAPED = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPED.update({code: f"\\u{code:04x}" for code in _BIDI})
_ONE_LINE = str.maketrans(_ESCAPED)
_MULTILINE = str.maketrans({code: text for code, text in _ESCAPED.items() if chr(code) not in "\n\t"})


def printable(text: object, newlines: bool = False) -> str:
    """`text` (any value, as str()) with every control character shown as a visible escape.

    `newlines=True` keeps newline and tab, for a block of text whose layout allows them; by default
    they are escaped too, so a log record stays one line and cannot forge the next.
    """
    return str(text).translate(_MULTILINE if newlines else _ONE_LINE)


def printable_text(text: object, style: str = "", newlines: bool = False) -> Text:
    """`text` as a rich console shows it: escaped as `printable` escapes it, and a `Text`, so that no
    `[bold]` or `[link=...]` in it is read as markup. For any value a file or a model supplied (a name,
    a table cell, a title)."""
    return Text(printable(text, newlines=newlines), style=style)


def format_cell(value: object, spec: str = "") -> str:
    """`value` as a table cell, formatted by `spec` (as `format` takes it), or "-" for a value that is
    missing: None, NaN or an infinity (no parameter count behind an API, no alignment without edges)."""
    if value is None or (isinstance(value, Real) and not isinstance(value, Integral) and not math.isfinite(value)):
        return "-"
    return format(value, spec)
