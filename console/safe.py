"""Untrusted text, made safe to show: control characters replaced, length bounded, no markup.

Everything the console shows that came from the network — node and machine ids, roles, states,
class names, drift verdicts, reasons, the trainer's phase and gate reasons — goes through here.
Textual parses a plain `str` in a table cell, a Label or a Static as markup: `[/x]` raises
MarkupError (which ended the console) and `[link=…]` makes a clickable link. So the screen
gets `rich.text.Text` objects (shown literally, never parsed), and the text in them is cleaned
and bounded first:

>>> clean("pump[/x]\\x1b[31m\\nok")
'pump[/x]?[31m?ok'
>>> clean("x" * 500, 8)
'xxxxxxx…'
>>> show("[link=https://evil.example]click[/link]").plain
'[link=https://evil.example]click[/link]'
>>> show("[link=https://evil.example]click[/link]").spans
[]
"""

from __future__ import annotations

from rich.text import Text

__all__ = ["MAX_CELL", "MAX_LINE", "clean", "show"]

MAX_CELL = 64  # a table cell: ids are ≤ 64 characters by the protocol
MAX_LINE = 300  # a timeline line, the bar, a question


def clean(value: object, limit: int = MAX_CELL) -> str:
    """`value` as one printable line of at most `limit` characters.

    Every character that is not printable (control characters, ESC, newlines, bidi and other
    format characters) becomes '?'; a longer text is cut, ending in '…'. Markup characters are
    kept as they are: `show()` makes sure they are never parsed.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text


def show(value: object, limit: int = MAX_CELL, style: str = "") -> Text:
    """`value` cleaned (see `clean`) as a Rich `Text`: shown literally, never parsed as markup."""
    return Text(clean(value, limit), style=style, no_wrap=False)
