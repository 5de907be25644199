"""Printing untrusted text to a terminal: never as Rich markup, never with escape sequences.

Feed titles, summaries, error messages and search queries come from strangers. Rich would
read ``[bold`` or ``[/]`` in them as markup (and raise MarkupError on an unbalanced tag), and
a terminal would obey an ANSI or OSC sequence (colours, screen clear, hyperlinks). Every CLI
printer turns such values into :class:`rich.text.Text` through :func:`safe` first.
"""

from __future__ import annotations

from rich.text import Text

from pipeline.sanitize import strip_control


def clean(value: object) -> str:
    """``value`` as one printable line: no control characters or escape sequences."""
    return strip_control("" if value is None else str(value), keep_newlines=False)


def safe(value: object, style: str = "") -> Text:
    """``value`` as literal Rich text (markup characters stay characters), cleaned."""
    return Text(clean(value), style=style)
